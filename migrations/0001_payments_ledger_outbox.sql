CREATE TABLE "chain_nonces" (
	"address" text PRIMARY KEY NOT NULL,
	"next_nonce" bigint NOT NULL
);
--> statement-breakpoint
CREATE TABLE "chain_transfers" (
	"id" text PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"task_id" text,
	"from_address" text NOT NULL,
	"to_address" text NOT NULL,
	"amount" bigint NOT NULL,
	"status" text NOT NULL,
	"nonce" bigint,
	"raw_tx" text,
	"tx_hash" text,
	"block_number" bigint,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp with time zone NOT NULL,
	"lease_owner" text,
	"lease_expires_at" timestamp with time zone,
	"last_error" text,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	"confirmed_at" timestamp with time zone,
	CONSTRAINT "chain_transfers_status_chk" CHECK ("chain_transfers"."status" in ('pending','signed','sent','confirmed','failed')),
	CONSTRAINT "chain_transfers_amount_pos" CHECK ("chain_transfers"."amount" > 0)
);
--> statement-breakpoint
CREATE TABLE "ledger_entries" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"movement_id" text NOT NULL,
	"kind" text NOT NULL,
	"account" text NOT NULL,
	"amount" bigint NOT NULL,
	"task_id" text,
	"payment_id" text,
	"transfer_id" text,
	"created_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "payments" (
	"id" text PRIMARY KEY NOT NULL,
	"payer_address" text NOT NULL,
	"pay_to" text NOT NULL,
	"amount" bigint NOT NULL,
	"asset" text NOT NULL,
	"network" text NOT NULL,
	"authorization_nonce" text NOT NULL,
	"status" text NOT NULL,
	"tx_hash" text,
	"endpoint" text NOT NULL,
	"kind" text NOT NULL,
	"task_id" text,
	"created_at" timestamp with time zone NOT NULL,
	"settled_at" timestamp with time zone,
	CONSTRAINT "payments_kind_chk" CHECK ("payments"."kind" in ('call_fee','escrow_funding')),
	CONSTRAINT "payments_status_chk" CHECK ("payments"."status" in ('claimed','settled')),
	CONSTRAINT "payments_amount_pos" CHECK ("payments"."amount" > 0)
);
--> statement-breakpoint
CREATE UNIQUE INDEX "chain_transfers_task_kind_uq" ON "chain_transfers" USING btree ("task_id","kind");--> statement-breakpoint
CREATE INDEX "chain_transfers_due_idx" ON "chain_transfers" USING btree ("next_attempt_at") WHERE status in ('pending','signed','sent');--> statement-breakpoint
CREATE INDEX "ledger_movement_idx" ON "ledger_entries" USING btree ("movement_id");--> statement-breakpoint
CREATE INDEX "ledger_account_idx" ON "ledger_entries" USING btree ("account");--> statement-breakpoint
CREATE INDEX "ledger_task_idx" ON "ledger_entries" USING btree ("task_id");--> statement-breakpoint
CREATE UNIQUE INDEX "payments_authorization_uq" ON "payments" USING btree ("network","asset","payer_address","authorization_nonce");--> statement-breakpoint
CREATE INDEX "payments_payer_idx" ON "payments" USING btree ("payer_address","created_at");--> statement-breakpoint
CREATE INDEX "payments_task_idx" ON "payments" USING btree ("task_id");