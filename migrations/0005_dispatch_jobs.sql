CREATE TABLE "dispatch_jobs" (
	"task_id" text PRIMARY KEY NOT NULL,
	"agent_id" text NOT NULL,
	"state" text NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"lost_runs" integer DEFAULT 0 NOT NULL,
	"next_at" timestamp with time zone NOT NULL,
	"lease_owner" text,
	"lease_expires_at" timestamp with time zone,
	"last_error" text,
	"notified_at" timestamp with time zone,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	CONSTRAINT "dispatch_jobs_state_chk" CHECK ("dispatch_jobs"."state" in ('queued','running','awaiting_delivery','stuck','done')),
	CONSTRAINT "dispatch_jobs_counts_nonneg" CHECK ("dispatch_jobs"."attempts" >= 0 and "dispatch_jobs"."lost_runs" >= 0)
);
--> statement-breakpoint
DROP INDEX "tasks_dispatch_due_idx";--> statement-breakpoint
DROP INDEX "tasks_dispatch_lease_idx";--> statement-breakpoint
ALTER TABLE "callback_deliveries" ADD COLUMN "lease_owner" text;--> statement-breakpoint
ALTER TABLE "callback_deliveries" ADD COLUMN "lease_expires_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "dispatch_jobs" ADD CONSTRAINT "dispatch_jobs_task_id_tasks_id_fk" FOREIGN KEY ("task_id") REFERENCES "public"."tasks"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "dispatch_jobs_due_idx" ON "dispatch_jobs" USING btree ("next_at") WHERE state = 'queued';--> statement-breakpoint
CREATE INDEX "dispatch_jobs_lease_idx" ON "dispatch_jobs" USING btree ("lease_expires_at") WHERE state = 'running';--> statement-breakpoint
CREATE INDEX "dispatch_jobs_agent_running_idx" ON "dispatch_jobs" USING btree ("agent_id") WHERE state = 'running';--> statement-breakpoint
-- Existing queue entries move with their counts; a running lease becomes a queued job due now
-- (the worker holding it is gone after the upgrade), a finished task's entry becomes done.
INSERT INTO "dispatch_jobs" ("task_id", "agent_id", "state", "attempts", "lost_runs", "next_at", "last_error", "notified_at", "created_at", "updated_at")
SELECT "id", "agent_id",
  CASE WHEN "dispatch_state" = 'running' THEN 'queued'
       WHEN "dispatch_state" IN ('queued', 'awaiting_delivery', 'stuck') THEN "dispatch_state"
       ELSE 'done' END,
  "dispatch_attempts", 0, coalesce("dispatch_next_at", now()), "last_dispatch_error", "agent_notified_at", coalesce("funded_at", "created_at"), "updated_at"
FROM "tasks" WHERE "funded_at" IS NOT NULL OR "dispatch_state" IS NOT NULL;--> statement-breakpoint
ALTER TABLE "tasks" DROP COLUMN "dispatch_state";--> statement-breakpoint
ALTER TABLE "tasks" DROP COLUMN "dispatch_attempts";--> statement-breakpoint
ALTER TABLE "tasks" DROP COLUMN "dispatch_next_at";--> statement-breakpoint
ALTER TABLE "tasks" DROP COLUMN "lease_owner";--> statement-breakpoint
ALTER TABLE "tasks" DROP COLUMN "lease_expires_at";--> statement-breakpoint
ALTER TABLE "tasks" DROP COLUMN "last_dispatch_error";--> statement-breakpoint
ALTER TABLE "tasks" DROP COLUMN "agent_notified_at";