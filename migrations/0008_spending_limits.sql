CREATE TABLE "spending_limits" (
	"payer_address" text PRIMARY KEY NOT NULL,
	"max_per_task" bigint,
	"max_per_batch" bigint,
	"max_per_day" bigint,
	"updated_at" timestamp with time zone NOT NULL,
	CONSTRAINT "spending_limits_per_task_chk" CHECK ("spending_limits"."max_per_task" is null or "spending_limits"."max_per_task" >= 0),
	CONSTRAINT "spending_limits_per_batch_chk" CHECK ("spending_limits"."max_per_batch" is null or "spending_limits"."max_per_batch" >= 0),
	CONSTRAINT "spending_limits_per_day_chk" CHECK ("spending_limits"."max_per_day" is null or "spending_limits"."max_per_day" >= 0)
);
