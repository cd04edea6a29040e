-- Instances placed on a chosen agent (the dashboard's wizard, `berth instance create`): no
-- offering, and for a provider's own machines no customer. Every operation of such an instance
-- is claimable only by that agent (operations.agent_id).
ALTER TABLE instances ALTER COLUMN customer_id DROP NOT NULL;
ALTER TABLE instances ALTER COLUMN offering_id DROP NOT NULL;
ALTER TABLE instances ADD COLUMN agent_id TEXT REFERENCES agents (id);
ALTER TABLE operations ADD COLUMN agent_id TEXT;
