-- Names unique per owner: a provider's among providers, an offering's among its provider's
-- offerings on sale (a withdrawn offering's name may be used again). Names already taken
-- twice keep the oldest holder; each other one gets the start of its id appended.
UPDATE providers SET name = name || '-' || substr(id, 1, 8)
 WHERE EXISTS (SELECT 1 FROM providers p WHERE p.name = providers.name
               AND (p.created_at < providers.created_at
                    OR (p.created_at = providers.created_at AND p.id < providers.id)));
CREATE UNIQUE INDEX providers_name ON providers (name);

ALTER TABLE offerings ADD COLUMN name TEXT;
UPDATE offerings SET name = body::jsonb ->> 'name';
UPDATE offerings SET name = name || '-' || substr(id, 1, 8)
 WHERE withdrawn_at IS NULL
   AND EXISTS (SELECT 1 FROM offerings o WHERE o.provider_id = offerings.provider_id
               AND o.name = offerings.name AND o.withdrawn_at IS NULL
               AND (o.created_at < offerings.created_at
                    OR (o.created_at = offerings.created_at AND o.id < offerings.id)));
UPDATE offerings SET body = jsonb_set(body::jsonb, '{name}', to_jsonb(name))::text
 WHERE body::jsonb ->> 'name' <> name;
CREATE UNIQUE INDEX offerings_name ON offerings (provider_id, name) WHERE withdrawn_at IS NULL;
