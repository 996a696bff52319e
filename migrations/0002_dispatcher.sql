CREATE TABLE "callback_attempts" (
	"delivery_id" text NOT NULL,
	"attempt" integer NOT NULL,
	"status_code" integer,
	"error" text,
	"at" timestamp with time zone NOT NULL,
	CONSTRAINT "callback_attempts_delivery_id_attempt_pk" PRIMARY KEY("delivery_id","attempt"),
	CONSTRAINT "callback_attempts_attempt_pos" CHECK ("callback_attempts"."attempt" >= 1)
);
--> statement-breakpoint
CREATE TABLE "callback_deliveries" (
	"id" text PRIMARY KEY NOT NULL,
	"task_id" text NOT NULL,
	"url" text NOT NULL,
	"event" text NOT NULL,
	"payload" jsonb NOT NULL,
	"status" text DEFAULT 'pending' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp with time zone NOT NULL,
	"last_status_code" integer,
	"last_error" text,
	"created_at" timestamp with time zone NOT NULL,
	"delivered_at" timestamp with time zone,
	CONSTRAINT "callback_deliveries_status_chk" CHECK ("callback_deliveries"."status" in ('pending','delivered','failed')),
	CONSTRAINT "callback_deliveries_event_chk" CHECK ("callback_deliveries"."event" in ('task.completed','task.failed','task.cancelled','task.expired','task.disputed')),
	CONSTRAINT "callback_deliveries_attempts_nonneg" CHECK ("callback_deliveries"."attempts" >= 0)
);
--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "dispatch_state" text;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "dispatch_attempts" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "dispatch_next_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "lease_owner" text;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "lease_expires_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "last_dispatch_error" text;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "agent_notified_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "callback_attempts" ADD CONSTRAINT "callback_attempts_delivery_id_callback_deliveries_id_fk" FOREIGN KEY ("delivery_id") REFERENCES "public"."callback_deliveries"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "callback_deliveries_due_idx" ON "callback_deliveries" USING btree ("next_attempt_at") WHERE status = 'pending';--> statement-breakpoint
CREATE INDEX "callback_deliveries_task_idx" ON "callback_deliveries" USING btree ("task_id");--> statement-breakpoint
CREATE INDEX "tasks_dispatch_due_idx" ON "tasks" USING btree ("dispatch_next_at") WHERE dispatch_state = 'queued';--> statement-breakpoint
CREATE INDEX "tasks_dispatch_lease_idx" ON "tasks" USING btree ("lease_expires_at") WHERE dispatch_state = 'running';--> statement-breakpoint
CREATE INDEX "tasks_running_deadline_idx" ON "tasks" USING btree ("deadline_at") WHERE status = 'in_progress';