CREATE TABLE "batches" (
	"id" text PRIMARY KEY NOT NULL,
	"payer_address" text NOT NULL,
	"policy" text NOT NULL,
	"max_concurrency" integer NOT NULL,
	"max_spend" bigint,
	"item_count" integer NOT NULL,
	"escrow_total" bigint NOT NULL,
	"fee" bigint NOT NULL,
	"payment_id" text,
	"fund_tx_hash" text,
	"cancelled_at" timestamp with time zone,
	"created_at" timestamp with time zone NOT NULL,
	CONSTRAINT "batches_policy_chk" CHECK ("batches"."policy" in ('fail_fast','continue')),
	CONSTRAINT "batches_concurrency_pos" CHECK ("batches"."max_concurrency" > 0)
);
--> statement-breakpoint
ALTER TABLE "dispatch_jobs" DROP CONSTRAINT "dispatch_jobs_state_chk";--> statement-breakpoint
ALTER TABLE "dispatch_jobs" ADD COLUMN "batch_id" text;--> statement-breakpoint
ALTER TABLE "dispatch_jobs" ADD COLUMN "depends_on" jsonb;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "batch_id" text;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "batch_index" integer;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "depends_on" jsonb;--> statement-breakpoint
CREATE INDEX "batches_payer_idx" ON "batches" USING btree ("payer_address","created_at");--> statement-breakpoint
ALTER TABLE "tasks" ADD CONSTRAINT "tasks_batch_id_batches_id_fk" FOREIGN KEY ("batch_id") REFERENCES "public"."batches"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "dispatch_jobs_batch_idx" ON "dispatch_jobs" USING btree ("batch_id","state") WHERE batch_id is not null;--> statement-breakpoint
CREATE INDEX "tasks_batch_idx" ON "tasks" USING btree ("batch_id","batch_index") WHERE batch_id is not null;--> statement-breakpoint
ALTER TABLE "dispatch_jobs" ADD CONSTRAINT "dispatch_jobs_state_chk" CHECK ("dispatch_jobs"."state" in ('waiting','queued','running','awaiting_delivery','stuck','done'));