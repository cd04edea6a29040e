//! The catalogue half of `impl Store` (see [`crate::control`]), written once for both databases
//! and expanded inside each store's impl by `store_impl!`: customers and tokens, agent reports,
//! offerings, instances and their operations, operation events, nonces and idempotency keys.

macro_rules! control_impl {
    ($ty:ty) => {
    #[async_trait::async_trait]
    impl $crate::Catalog for $ty {
    async fn add_events(
        &self,
        lease: &Lease,
        events: Vec<serde_json::Value>,
        now: Millis,
    ) -> Result<Vec<$crate::OpEvent>, StoreError> {
        let mut tx = self.begin_write().await?;
        // Checks the lease and locks the operation's row, so event numbers never collide.
        if Self::held_update_in(&mut tx, lease, now, $crate::common::Held::Touch).await?.is_none() {
            drop(tx);
            return Err(self.lost(&lease.operation_id).await);
        }
        let last: i64 = {
            use sqlx::Row as _;
            sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM operation_events WHERE operation_id = $1")
                .bind(&lease.operation_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("last")?
        };
        let mut out = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            let seq = last + 1 + i as i64;
            sqlx::query("INSERT INTO operation_events (operation_id, seq, at, event) VALUES ($1, $2, $3, $4)")
                .bind(&lease.operation_id)
                .bind(seq)
                .bind(now)
                .bind(event.to_string())
                .execute(&mut *tx)
                .await?;
            out.push($crate::OpEvent { seq, at: now, event });
        }
        tx.commit().await?;
        // After the commit: a lost wake-up only waits for the recheck.
        let _ = self.wake(&format!("op:{}", lease.operation_id)).await;
        Ok(out)
    }

    async fn events(&self, operation_id: &str, after_seq: i64) -> Result<Vec<$crate::OpEvent>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query("SELECT seq, at, event FROM operation_events WHERE operation_id = $1 AND seq > $2 ORDER BY seq")
            .bind(operation_id)
            .bind(after_seq)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok($crate::OpEvent {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    event: $crate::control::json_col(r.try_get("event")?)?,
                })
            })
            .collect()
    }

    fn operation_signal(&self, operation_id: &str) -> std::sync::Arc<tokio::sync::Notify> {
        self.signals.get(&format!("op:{operation_id}"))
    }

    async fn providers(&self, page: &$crate::Page) -> Result<Vec<Provider>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query(
            "SELECT * FROM providers WHERE ($1 IS NULL OR (created_at, id) > (SELECT created_at, id FROM providers WHERE id = $1))
             ORDER BY created_at, id LIMIT $2",
        )
        .bind(page.after.as_deref())
        .bind(page.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(Provider { id: r.try_get("id")?, name: r.try_get("name")?, created_at: r.try_get("created_at")? }))
            .collect()
    }

    async fn agents(&self, provider_id: Option<&str>, page: &$crate::Page) -> Result<Vec<Agent>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM agents WHERE ($1 IS NULL OR provider_id = $1)
             AND ($2 IS NULL OR (created_at, id) > (SELECT created_at, id FROM agents WHERE id = $2))
             ORDER BY created_at, id LIMIT $3",
        )
        .bind(provider_id)
        .bind(page.after.as_deref())
        .bind(page.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| agents::agent_from_row!(r)).collect()
    }

    async fn agent_by_key(&self, public_key: &str) -> Result<Agent, StoreError> {
        match sqlx::query("SELECT * FROM agents WHERE public_key = $1")
            .bind(public_key)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => agents::agent_from_row!(&row),
            None => Err(StoreError::NotFound("agent with this public key".into())),
        }
    }

    async fn create_customer(&self, name: &str, now: Millis) -> Result<$crate::Customer, StoreError> {
        agents::check_name("name", name)?;
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO customers (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok($crate::Customer { id, name: name.to_owned(), created_at: now })
    }

    async fn provider(&self, id: &str) -> Result<Provider, StoreError> {
        use sqlx::Row as _;
        let r = sqlx::query("SELECT id, name, created_at FROM providers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("provider {id}")))?;
        Ok(Provider { id: r.try_get("id")?, name: r.try_get("name")?, created_at: r.try_get("created_at")? })
    }

    async fn customer(&self, id: &str) -> Result<$crate::Customer, StoreError> {
        use sqlx::Row as _;
        let row = sqlx::query("SELECT id, name, created_at FROM customers WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("customer {id}")))?;
        Ok($crate::Customer { id: row.try_get("id")?, name: row.try_get("name")?, created_at: row.try_get("created_at")? })
    }

    async fn add_customer_key(
        &self,
        customer_id: &str,
        kind: &str,
        name: &str,
        public_key: &str,
        now: Millis,
    ) -> Result<$crate::CustomerKey, StoreError> {
        agents::check_name("name", name)?;
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO customer_keys (id, customer_id, kind, name, public_key, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(customer_id)
        .bind(kind)
        .bind(name)
        .bind(public_key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok($crate::CustomerKey {
            id,
            customer_id: customer_id.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            public_key: public_key.to_owned(),
            created_at: now,
        })
    }

    async fn customer_keys(&self, customer_id: &str, page: &$crate::Page) -> Result<Vec<$crate::CustomerKey>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query(
            "SELECT * FROM customer_keys WHERE customer_id = $1
             AND ($2 IS NULL OR (created_at, id) > (SELECT created_at, id FROM customer_keys WHERE id = $2))
             ORDER BY created_at, id LIMIT $3",
        )
        .bind(customer_id)
        .bind(page.after.as_deref())
        .bind(page.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok($crate::CustomerKey {
                    id: r.try_get("id")?,
                    customer_id: r.try_get("customer_id")?,
                    kind: r.try_get("kind")?,
                    name: r.try_get("name")?,
                    public_key: r.try_get("public_key")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn delete_customer_key(&self, customer_id: &str, id: &str) -> Result<(), StoreError> {
        let gone = sqlx::query("DELETE FROM customer_keys WHERE id = $1 AND customer_id = $2")
            .bind(id)
            .bind(customer_id)
            .execute(&self.pool)
            .await?;
        if gone.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("key {id}")));
        }
        Ok(())
    }

    async fn customers(&self, page: &$crate::Page) -> Result<Vec<$crate::Customer>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query(
            "SELECT id, name, created_at FROM customers
             WHERE ($1 IS NULL OR (created_at, id) > (SELECT created_at, id FROM customers WHERE id = $1))
             ORDER BY created_at, id LIMIT $2",
        )
        .bind(page.after.as_deref())
        .bind(page.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok($crate::Customer { id: r.try_get("id")?, name: r.try_get("name")?, created_at: r.try_get("created_at")? }))
            .collect()
    }

    async fn create_api_token(
        &self,
        role: $crate::Role,
        subject: &str,
        name: &str,
        now: Millis,
    ) -> Result<$crate::ApiToken, StoreError> {
        let t = $crate::ApiToken::generate(role, subject)?;
        self.store_api_token(&t, name, now).await?;
        Ok(t)
    }

    async fn store_api_token(&self, t: &$crate::ApiToken, name: &str, now: Millis) -> Result<(), StoreError> {
        agents::check_name("name", name)?;
        sqlx::query("INSERT INTO api_tokens (token_hash, role, subject, name, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(agents::token_hash(&t.secret))
            .bind(t.role.as_str())
            .bind(&t.subject)
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn token_principal(&self, secret: &str, now: Millis) -> Result<Option<($crate::Role, String)>, StoreError> {
        use sqlx::Row as _;
        let row = sqlx::query(
            "SELECT role, subject FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(agents::token_hash(secret))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(($crate::Role::parse(&r.try_get::<String, _>("role")?)?, r.try_get("subject")?)))
            .transpose()
    }

    async fn create_session(
        &self,
        token: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<$crate::control::Session>, StoreError> {
        let Some((role, subject)) = self.token_principal(token, now).await? else {
            return Ok(None);
        };
        let secret = agents::new_secret()?.replacen(agents::TOKEN_PREFIX, "berth_session_", 1);
        let expires_at = now.saturating_add(ttl_ms.max(1));
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO sessions (session_hash, token_hash, expires_at, created_at) VALUES ($1, $2, $3, $4)")
            .bind(agents::token_hash(&secret))
            .bind(agents::token_hash(token))
            .bind(expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some($crate::control::Session {
            secret,
            role,
            subject,
            expires_at,
        }))
    }

    async fn session_principal(&self, secret: &str, now: Millis) -> Result<Option<($crate::Role, String)>, StoreError> {
        use sqlx::Row as _;
        let row = sqlx::query(
            "SELECT t.role, t.subject FROM sessions s JOIN api_tokens t ON t.token_hash = s.token_hash
             WHERE s.session_hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL
             AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(agents::token_hash(secret))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(($crate::Role::parse(&r.try_get::<String, _>("role")?)?, r.try_get("subject")?)))
            .transpose()
    }

    async fn end_session(&self, secret: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE session_hash = $1")
            .bind(agents::token_hash(secret))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn has_operator_token(&self) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT 1 FROM api_tokens WHERE role = 'operator' AND revoked_at IS NULL LIMIT 1")
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    async fn record_heartbeat(&self, agent_id: &str, report: serde_json::Value, now: Millis) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_status (agent_id, seen_at, report) VALUES ($1, $2, $3)
             ON CONFLICT (agent_id) DO UPDATE SET seen_at = excluded.seen_at, report = excluded.report",
        )
        .bind(agent_id)
        .bind(now)
        .bind(report.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn agent_statuses(&self, provider_id: Option<&str>) -> Result<Vec<$crate::AgentStatus>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query(
            "SELECT s.agent_id, a.provider_id, s.seen_at, s.report FROM agent_status s JOIN agents a ON a.id = s.agent_id
             WHERE a.revoked_at IS NULL AND ($1 IS NULL OR a.provider_id = $1) ORDER BY s.agent_id",
        )
        .bind(provider_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok($crate::AgentStatus {
                    agent_id: r.try_get("agent_id")?,
                    provider_id: r.try_get("provider_id")?,
                    seen_at: r.try_get("seen_at")?,
                    report: $crate::control::json_col(r.try_get("report")?)?,
                })
            })
            .collect()
    }

    async fn set_templates(
        &self,
        agent_id: &str,
        templates: Vec<(String, String, serde_json::Value)>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM agent_templates WHERE agent_id = $1").bind(agent_id).execute(&mut *tx).await?;
        for (backend, id, detail) in templates {
            sqlx::query(
                "INSERT INTO agent_templates (agent_id, backend, template_id, detail, reported_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (agent_id, backend, template_id) DO UPDATE SET detail = excluded.detail",
            )
            .bind(agent_id)
            .bind(backend)
            .bind(id)
            .bind(detail.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn templates(
        &self,
        agent_id: Option<&str>,
        provider_id: Option<&str>,
    ) -> Result<Vec<$crate::TemplateRecord>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query(
            "SELECT t.* FROM agent_templates t JOIN agents a ON a.id = t.agent_id
             WHERE a.revoked_at IS NULL AND ($1 IS NULL OR t.agent_id = $1) AND ($2 IS NULL OR a.provider_id = $2)
             ORDER BY t.agent_id, t.backend, t.template_id",
        )
        .bind(agent_id)
        .bind(provider_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok($crate::TemplateRecord {
                    agent_id: r.try_get("agent_id")?,
                    backend: r.try_get("backend")?,
                    template_id: r.try_get("template_id")?,
                    detail: $crate::control::json_col(r.try_get("detail")?)?,
                    reported_at: r.try_get("reported_at")?,
                })
            })
            .collect()
    }

    async fn create_offering(
        &self,
        provider_id: &str,
        body: serde_json::Value,
        max_offerings: Option<i64>,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<$crate::Offering, StoreError> {
        let mut tx = self.begin_write().await?;
        if let Some(limit) = max_offerings {
            self.lock_audit(&mut tx).await?;
            $crate::quota::check_offerings!(&mut *tx, provider_id, limit);
        }
        let name = $crate::control::offering_name(&body);
        let row = sqlx::query(
            "INSERT INTO offerings (id, provider_id, body, name, created_at)
             SELECT $1, id, $2, $3, $4 FROM providers WHERE id = $5 RETURNING *",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(body.to_string())
        .bind(&name)
        .bind(now)
        .bind(provider_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| $crate::control::name_taken(e, "offering", &name))?
        .ok_or_else(|| StoreError::NotFound(format!("provider {provider_id}")))?;
        let offering = $crate::control::offering_from_row!(&row)?;
        let mut audit = audit;
        audit.subject = format!("offering:{}", offering.id);
        self.audit_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        Ok(offering)
    }

    async fn offering(&self, id: &str) -> Result<$crate::Offering, StoreError> {
        match sqlx::query("SELECT * FROM offerings WHERE id = $1").bind(id).fetch_optional(&self.pool).await? {
            Some(row) => $crate::control::offering_from_row!(&row),
            None => Err(StoreError::NotFound(format!("offering {id}"))),
        }
    }

    async fn offerings(
        &self,
        provider_id: Option<&str>,
        withdrawn: bool,
        page: &$crate::Page,
    ) -> Result<Vec<$crate::Offering>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM offerings WHERE ($4 OR withdrawn_at IS NULL) AND ($1 IS NULL OR provider_id = $1)
             AND ($2 IS NULL OR (created_at, id) > (SELECT created_at, id FROM offerings WHERE id = $2))
             ORDER BY created_at, id LIMIT $3",
        )
        .bind(provider_id)
        .bind(page.after.as_deref())
        .bind(page.limit)
        .bind(withdrawn)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| $crate::control::offering_from_row!(r)).collect()
    }

    async fn update_offering(
        &self,
        id: &str,
        body: serde_json::Value,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<$crate::Offering, StoreError> {
        let mut tx = self.begin_write().await?;
        let name = $crate::control::offering_name(&body);
        let row = sqlx::query("UPDATE offerings SET body = $1, name = $2 WHERE id = $3 AND withdrawn_at IS NULL RETURNING *")
            .bind(body.to_string())
            .bind(&name)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| $crate::control::name_taken(e, "offering", &name))?;
        let Some(row) = row else {
            let exists = sqlx::query("SELECT id FROM offerings WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            return Err(if exists {
                StoreError::Conflict(format!("offering {id} is withdrawn; publish a new one"))
            } else {
                StoreError::NotFound(format!("offering {id}"))
            });
        };
        self.audit_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        $crate::control::offering_from_row!(&row)
    }

    async fn withdraw_offering(&self, id: &str, audit: NewAuditEntry, now: Millis) -> Result<$crate::Offering, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("UPDATE offerings SET withdrawn_at = COALESCE(withdrawn_at, $1) WHERE id = $2 RETURNING *")
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("offering {id}")))?;
        self.audit_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        $crate::control::offering_from_row!(&row)
    }

    async fn create_instance(
        &self,
        new: $crate::NewInstance,
        first: Option<(String, serde_json::Value)>,
        audit: NewAuditEntry,
        now: Millis,
    ) -> Result<($crate::InstanceRecord, Option<Operation>), StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.begin_write().await?;
        if let Some(q) = &new.quota {
            // Serialises the creators (the audit lock is taken by every one of them anyway).
            self.lock_audit(&mut tx).await?;
            $crate::quota::check_instances!(&mut *tx, &new, q);
        }
        let row = sqlx::query(
            "INSERT INTO instances (id, provider_id, customer_id, offering_id, agent_id, status, request, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, '{}', $8, $8) RETURNING *",
        )
        .bind(&id)
        .bind(&new.provider_id)
        .bind(new.customer_id.as_deref())
        .bind(new.offering_id.as_deref())
        .bind(new.agent_id.as_deref())
        .bind(&new.status)
        .bind(new.request.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let instance = $crate::control::instance_from_row!(&row)?;
        let op = match first {
            Some((kind, mut payload)) => {
                if let Some(o) = payload.as_object_mut() {
                    o.insert("instance_id".into(), serde_json::Value::String(id.clone()));
                }
                let new_op = NewOperation {
                    provider_id: new.provider_id.clone(),
                    instance_id: id.clone(),
                    kind,
                    payload,
                    agent_id: new.agent_id.clone(),
                };
                let queued = self.enqueue_in(&mut tx, &new_op, now).await?;
                Some((queued, $crate::signal_for(&new_op)))
            }
            None => None,
        };
        let mut audit = audit;
        audit.subject = format!("instance:{id}");
        if let (Some((op, _)), Some(d)) = (&op, audit.detail.as_object_mut()) {
            d.insert("operation_id".into(), serde_json::Value::String(op.id.clone()));
        }
        self.audit_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        if let Some((_, signal)) = &op {
            // After the commit: a lost wake-up only waits for the recheck.
            let _ = self.wake(signal).await;
        }
        Ok((instance, op.map(|(op, _)| op)))
    }

    async fn instance(&self, id: &str) -> Result<$crate::InstanceRecord, StoreError> {
        match sqlx::query("SELECT * FROM instances WHERE id = $1").bind(id).fetch_optional(&self.pool).await? {
            Some(row) => $crate::control::instance_from_row!(&row),
            None => Err(StoreError::NotFound(format!("instance {id}"))),
        }
    }

    async fn instances(&self, f: &$crate::InstanceFilter, page: &$crate::Page) -> Result<Vec<$crate::InstanceRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM instances WHERE ($1 IS NULL OR provider_id = $1) AND ($2 IS NULL OR customer_id = $2)
             AND ($3 IS NULL OR status = $3)
             AND ($4 IS NULL OR (created_at, id) > (SELECT created_at, id FROM instances WHERE id = $4))
             ORDER BY created_at, id LIMIT $5",
        )
        .bind(f.provider_id.as_deref())
        .bind(f.customer_id.as_deref())
        .bind(f.status.as_deref())
        .bind(page.after.as_deref())
        .bind(page.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| $crate::control::instance_from_row!(r)).collect()
    }

    async fn act_on_instance(&self, action: $crate::InstanceAction, now: Millis) -> Result<Operation, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT * FROM instances WHERE id = $1")
            .bind(&action.instance_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("instance {}", action.instance_id)))?;
        let instance = $crate::control::instance_from_row!(&row)?;
        if !action.allowed.contains(&instance.status) {
            return Err(StoreError::Conflict(format!(
                "instance {} is {}; {} needs it to be {}",
                instance.id,
                instance.status,
                action.kind,
                action.allowed.join(" or ")
            )));
        }
        // Fenced on the status read above, with or without a new status: the row lock orders
        // concurrent actions (also across replicas), and one that moved it makes this one lose.
        let moved = sqlx::query(
            "UPDATE instances SET status = COALESCE($1, status), updated_at = $2 WHERE id = $3 AND status = $4",
        )
        .bind(action.new_status.as_deref())
        .bind(now)
        .bind(&instance.id)
        .bind(&instance.status)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            return Err(StoreError::Conflict(format!("instance {} changed meanwhile; try again", instance.id)));
        }
        let new_op = action.operation(&instance);
        let op = self.enqueue_in(&mut tx, &new_op, now).await?;
        let mut audit = action.audit;
        if let Some(d) = audit.detail.as_object_mut() {
            d.insert("operation_id".into(), serde_json::Value::String(op.id.clone()));
        }
        self.audit_in(&mut tx, audit, now).await?;
        tx.commit().await?;
        // After the commit: a lost wake-up only waits for the recheck.
        let _ = self.wake(&$crate::signal_for(&new_op)).await;
        Ok(op)
    }

    async fn instance_operations(&self, instance_id: &str, page: &$crate::Page) -> Result<Vec<Operation>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM operations WHERE instance_id = $1
             AND ($2 IS NULL OR seq > (SELECT seq FROM operations WHERE id = $2)) ORDER BY seq LIMIT $3",
        )
        .bind(instance_id)
        .bind(page.after.as_deref())
        .bind(page.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_op).collect()
    }
    }
    };
}
pub(crate) use control_impl;
