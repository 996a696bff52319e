ALTER TABLE "payments" DROP CONSTRAINT "payments_status_chk";--> statement-breakpoint
DROP INDEX "chain_transfers_task_kind_uq";--> statement-breakpoint
ALTER TABLE "chain_transfers" ADD COLUMN "cause" text;--> statement-breakpoint
UPDATE "chain_transfers" SET "cause" = 'task:' || "task_id" || ':' || "kind";--> statement-breakpoint
ALTER TABLE "chain_transfers" ALTER COLUMN "cause" SET NOT NULL;--> statement-breakpoint
ALTER TABLE "chain_transfers" ADD COLUMN "payment_id" text;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "purpose" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "header_hash" text;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "payload" jsonb;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "valid_before" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "lease_owner" text;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "lease_expires_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "failure_reason" text;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "updated_at" timestamp with time zone;--> statement-breakpoint
CREATE UNIQUE INDEX "chain_transfers_cause_uq" ON "chain_transfers" USING btree ("cause");--> statement-breakpoint
CREATE INDEX "chain_transfers_task_idx" ON "chain_transfers" USING btree ("task_id");--> statement-breakpoint
CREATE INDEX "payments_header_idx" ON "payments" USING btree ("header_hash");--> statement-breakpoint
CREATE INDEX "payments_unresolved_idx" ON "payments" USING btree ("lease_expires_at") WHERE status in ('verified','settling');--> statement-breakpoint
CREATE UNIQUE INDEX "payments_task_write_uq" ON "payments" USING btree ("task_id") WHERE status in ('verified','settling') and purpose in ('fund_task','cancel_task','dispute_task','rate_agent');--> statement-breakpoint
UPDATE "payments" SET "status" = CASE "status" WHEN 'claimed' THEN 'verified' WHEN 'settled' THEN 'booked' ELSE "status" END;--> statement-breakpoint
ALTER TABLE "payments" ADD CONSTRAINT "payments_status_chk" CHECK ("payments"."status" in ('verified','settling','booked','refunded','failed'));