ALTER TABLE "callback_deliveries" DROP CONSTRAINT "callback_deliveries_event_chk";--> statement-breakpoint
ALTER TABLE "callback_deliveries" ALTER COLUMN "task_id" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "batches" ADD COLUMN "callback_url" text;--> statement-breakpoint
ALTER TABLE "batches" ADD COLUMN "parent_task_id" text;--> statement-breakpoint
ALTER TABLE "batches" ADD COLUMN "delegation_key" text;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "parent_task_id" text;--> statement-breakpoint
ALTER TABLE "tasks" ADD COLUMN "delegation_depth" smallint DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "callback_deliveries" ADD COLUMN "batch_id" text;--> statement-breakpoint
ALTER TABLE "batches" ADD CONSTRAINT "batches_parent_task_id_tasks_id_fk" FOREIGN KEY ("parent_task_id") REFERENCES "public"."tasks"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "tasks" ADD CONSTRAINT "tasks_parent_task_id_tasks_id_fk" FOREIGN KEY ("parent_task_id") REFERENCES "public"."tasks"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "batches_delegation_uq" ON "batches" USING btree ("parent_task_id","delegation_key") WHERE parent_task_id is not null;--> statement-breakpoint
CREATE INDEX "tasks_parent_idx" ON "tasks" USING btree ("parent_task_id") WHERE parent_task_id is not null;--> statement-breakpoint
CREATE UNIQUE INDEX "callback_deliveries_batch_uq" ON "callback_deliveries" USING btree ("batch_id") WHERE batch_id is not null;--> statement-breakpoint
ALTER TABLE "tasks" ADD CONSTRAINT "tasks_delegation_depth_chk" CHECK ("tasks"."delegation_depth" >= 0 and ("tasks"."delegation_depth" = 0) = ("tasks"."parent_task_id" is null));--> statement-breakpoint
ALTER TABLE "callback_deliveries" ADD CONSTRAINT "callback_deliveries_subject_chk" CHECK (("callback_deliveries"."task_id" is null) <> ("callback_deliveries"."batch_id" is null));--> statement-breakpoint
ALTER TABLE "callback_deliveries" ADD CONSTRAINT "callback_deliveries_event_chk" CHECK ("callback_deliveries"."event" in ('task.completed','task.failed','task.cancelled','task.expired','task.disputed','batch.completed','batch.partially_failed','batch.failed','batch.cancelled'));