CREATE TABLE "payment_channels" (
	"channel_id" text PRIMARY KEY NOT NULL,
	"channel" jsonb,
	"payer" text,
	"receiver" text,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "payment_channels_id_chk" CHECK ("payment_channels"."channel_id" ~ '^0x[0-9a-f]{64}$'),
	CONSTRAINT "payment_channels_placeholder_chk" CHECK (("payment_channels"."channel" is null) = ("payment_channels"."payer" is null) and ("payment_channels"."channel" is null) = ("payment_channels"."receiver" is null))
);
--> statement-breakpoint
CREATE INDEX "payment_channels_receiver_idx" ON "payment_channels" USING btree ("receiver");--> statement-breakpoint
CREATE INDEX "payment_channels_payer_idx" ON "payment_channels" USING btree ("payer");