DROP INDEX "payments_authorization_uq";--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "channel_id" text;--> statement-breakpoint
CREATE INDEX "payments_channel_unresolved_idx" ON "payments" USING btree ("channel_id") WHERE channel_id is not null and status in ('verified','settling');--> statement-breakpoint
CREATE UNIQUE INDEX "payments_authorization_uq" ON "payments" USING btree ("network","asset","payer_address","authorization_nonce") WHERE status <> 'failed' and (channel_id is null or status <> 'refunded');