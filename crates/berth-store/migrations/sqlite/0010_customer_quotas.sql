-- What a provider lets each customer hold of its instances: one customer's numbers, or
-- customer_id 'default' for every customer without their own (NULL: no bound).
CREATE TABLE customer_quotas (
    provider_id       TEXT   NOT NULL,
    customer_id       TEXT   NOT NULL,
    instances         BIGINT,
    pending_instances BIGINT,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (provider_id, customer_id)
);
