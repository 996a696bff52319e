ALTER TABLE "payments" DROP CONSTRAINT "payments_status_chk";--> statement-breakpoint
CREATE INDEX "payments_payer_owed_idx" ON "payments" USING btree ("payer_address","status") WHERE status in ('deferred','defaulted');--> statement-breakpoint
CREATE INDEX "payments_deferred_idx" ON "payments" USING btree ("valid_before") WHERE status = 'deferred';--> statement-breakpoint
ALTER TABLE "payments" ADD CONSTRAINT "payments_status_chk" CHECK ("payments"."status" in ('verified','settling','booked','refunded','failed','deferred','defaulted','repaid'));