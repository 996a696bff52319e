CREATE TABLE "agents" (
	"id" text PRIMARY KEY NOT NULL,
	"owner_address" text NOT NULL,
	"payout_address" text NOT NULL,
	"name" text NOT NULL,
	"description" text DEFAULT '' NOT NULL,
	"capabilities" text[] DEFAULT '{}'::text[] NOT NULL,
	"search_text" text DEFAULT '' NOT NULL,
	"search_vector" "tsvector" GENERATED ALWAYS AS (to_tsvector('english', search_text)) STORED NOT NULL,
	"base_rate" bigint NOT NULL,
	"pricing_unit" text DEFAULT 'per-task' NOT NULL,
	"availability" text DEFAULT 'online' NOT NULL,
	"runtime" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"rating_sum" bigint DEFAULT 0 NOT NULL,
	"rating_count" integer DEFAULT 0 NOT NULL,
	"tasks_completed" integer DEFAULT 0 NOT NULL,
	"response_time_total_seconds" bigint DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	CONSTRAINT "agents_base_rate_nonneg" CHECK ("agents"."base_rate" >= 0),
	CONSTRAINT "agents_availability_chk" CHECK ("agents"."availability" in ('online','offline'))
);
--> statement-breakpoint
CREATE TABLE "auth_nonces" (
	"address" text NOT NULL,
	"nonce" text NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	CONSTRAINT "auth_nonces_address_nonce_pk" PRIMARY KEY("address","nonce")
);
--> statement-breakpoint
CREATE TABLE "disputes" (
	"id" text PRIMARY KEY NOT NULL,
	"task_id" text NOT NULL,
	"opened_by" text NOT NULL,
	"reason" text NOT NULL,
	"evidence" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"status" text NOT NULL,
	"previous_status" text NOT NULL,
	"submitted_at" timestamp with time zone NOT NULL,
	"expected_resolution_at" timestamp with time zone NOT NULL,
	"resolved_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "idempotency_keys" (
	"scope" text NOT NULL,
	"key" text NOT NULL,
	"method" text NOT NULL,
	"path" text NOT NULL,
	"request_hash" text NOT NULL,
	"state" text NOT NULL,
	"response_status" integer,
	"response_body" text,
	"response_content_type" text,
	"locked_until" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	CONSTRAINT "idempotency_keys_scope_key_pk" PRIMARY KEY("scope","key")
);
--> statement-breakpoint
CREATE TABLE "ratings" (
	"id" text PRIMARY KEY NOT NULL,
	"agent_id" text NOT NULL,
	"task_id" text NOT NULL,
	"rater_address" text NOT NULL,
	"rating" smallint NOT NULL,
	"comment" text,
	"created_at" timestamp with time zone NOT NULL,
	CONSTRAINT "ratings_range" CHECK ("ratings"."rating" between 1 and 5)
);
--> statement-breakpoint
CREATE TABLE "task_events" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"task_id" text NOT NULL,
	"from_status" text,
	"to_status" text NOT NULL,
	"escrow_status" text NOT NULL,
	"actor" text NOT NULL,
	"detail" jsonb,
	"at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "tasks" (
	"id" text PRIMARY KEY NOT NULL,
	"agent_id" text NOT NULL,
	"payer_address" text NOT NULL,
	"description" text NOT NULL,
	"requirements" jsonb,
	"budget_amount" bigint NOT NULL,
	"currency" text NOT NULL,
	"chain" text NOT NULL,
	"callback_url" text,
	"timeout_seconds" integer NOT NULL,
	"status" text NOT NULL,
	"escrow_status" text NOT NULL,
	"escrow_address" text NOT NULL,
	"funded_amount" bigint,
	"fund_tx_hash" text,
	"expires_at" timestamp with time zone NOT NULL,
	"funded_at" timestamp with time zone,
	"started_at" timestamp with time zone,
	"deadline_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"progress_percent" smallint DEFAULT 0 NOT NULL,
	"intermediate_result" jsonb,
	"estimated_completion" timestamp with time zone,
	"result" jsonb,
	"result_hash" text,
	"failure_reason" text,
	"cancel_reason" text,
	"cancellation_fee" bigint,
	"refund_amount" bigint,
	"refund_status" text,
	"refund_tx_hash" text,
	"version" integer DEFAULT 1 NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	CONSTRAINT "tasks_budget_pos" CHECK ("tasks"."budget_amount" > 0),
	CONSTRAINT "tasks_progress_range" CHECK ("tasks"."progress_percent" between 0 and 100),
	CONSTRAINT "tasks_status_chk" CHECK ("tasks"."status" in ('created','funded','in_progress','completed','failed','cancelled','disputed','expired')),
	CONSTRAINT "tasks_escrow_status_chk" CHECK ("tasks"."escrow_status" in ('none','held','released','refunded','partially_refunded','frozen'))
);
--> statement-breakpoint
ALTER TABLE "disputes" ADD CONSTRAINT "disputes_task_id_tasks_id_fk" FOREIGN KEY ("task_id") REFERENCES "public"."tasks"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "ratings" ADD CONSTRAINT "ratings_agent_id_agents_id_fk" FOREIGN KEY ("agent_id") REFERENCES "public"."agents"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "ratings" ADD CONSTRAINT "ratings_task_id_tasks_id_fk" FOREIGN KEY ("task_id") REFERENCES "public"."tasks"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "task_events" ADD CONSTRAINT "task_events_task_id_tasks_id_fk" FOREIGN KEY ("task_id") REFERENCES "public"."tasks"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "tasks" ADD CONSTRAINT "tasks_agent_id_agents_id_fk" FOREIGN KEY ("agent_id") REFERENCES "public"."agents"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "agents_search_vector_idx" ON "agents" USING gin ("search_vector");--> statement-breakpoint
CREATE INDEX "agents_capabilities_idx" ON "agents" USING gin ("capabilities");--> statement-breakpoint
CREATE INDEX "agents_owner_idx" ON "agents" USING btree ("owner_address");--> statement-breakpoint
CREATE INDEX "agents_online_rate_idx" ON "agents" USING btree ("base_rate") WHERE availability = 'online';--> statement-breakpoint
CREATE INDEX "auth_nonces_expiry_idx" ON "auth_nonces" USING btree ("expires_at");--> statement-breakpoint
CREATE UNIQUE INDEX "disputes_task_uq" ON "disputes" USING btree ("task_id");--> statement-breakpoint
CREATE INDEX "idempotency_expiry_idx" ON "idempotency_keys" USING btree ("expires_at");--> statement-breakpoint
CREATE UNIQUE INDEX "ratings_task_uq" ON "ratings" USING btree ("task_id");--> statement-breakpoint
CREATE INDEX "ratings_agent_recent_idx" ON "ratings" USING btree ("agent_id","created_at");--> statement-breakpoint
CREATE INDEX "task_events_task_idx" ON "task_events" USING btree ("task_id","id");--> statement-breakpoint
CREATE INDEX "tasks_payer_idx" ON "tasks" USING btree ("payer_address","created_at");--> statement-breakpoint
CREATE INDEX "tasks_agent_idx" ON "tasks" USING btree ("agent_id","created_at");--> statement-breakpoint
CREATE INDEX "tasks_unfunded_expiry_idx" ON "tasks" USING btree ("expires_at") WHERE status = 'created';--> statement-breakpoint
CREATE INDEX "tasks_funded_idx" ON "tasks" USING btree ("funded_at") WHERE status = 'funded';