//! What the security and authorization tests share: requests sent exactly as each kind of
//! caller sends them (a bearer token, an agent's signature, nothing), their answers as problem
//! documents, and a world of two providers, two customers and their agents, orders and leases.
#![allow(dead_code)]

use std::time::Duration;

use base64::Engine as _;
use berth_api::client::Client;
use berth_api::httpsig::RequestSigner;
use berth_api::wire::*;
use ed25519_dalek::SigningKey;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

use crate::common::*;

pub const POST: Method = Method::POST;
pub const GET: Method = Method::GET;

pub fn now_secs() -> i64 {
    berth_server::now_ms() / 1000
}

pub fn fresh_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    SigningKey::from_bytes(&seed)
}

pub fn b64_public(key: &SigningKey) -> String {
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes())
}

/// How a request proves who sends it.
#[derive(Clone)]
pub enum Who {
    Anonymous,
    Bearer(String),
    Agent(Box<SigningKey>, String),
}

impl Who {
    pub fn agent(a: &TestAgent) -> Who {
        Who::Agent(Box::new(a.key.clone()), a.id.clone())
    }
}

/// What came back: the status, the content type and the JSON body (`null` when there is none,
/// and for an event stream, whose body is not read: it runs until its operation is done).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    /// An RFC 7807 document of Berth's shape, its status the response's.
    pub fn is_problem(&self) -> bool {
        self.content_type == "application/problem+json"
            && self.body["status"] == self.status
            && !self.code().is_empty()
            && self.body["type"] == format!("https://berth.dev/problems/{}", self.code())
    }

    /// `200`, `404`…, or `409:wrong_status` when the problem code is not the usual one for the
    /// status (401 unauthenticated, 403 forbidden, 404 not_found).
    pub fn outcome(&self) -> String {
        let usual = match self.status {
            401 => "unauthenticated",
            403 => "forbidden",
            404 => "not_found",
            _ => "",
        };
        if self.status >= 400 && !self.is_problem() {
            format!("{} (not a problem document: {:?})", self.status, self.content_type)
        } else if self.status < 300 || self.code() == usual {
            self.status.to_string()
        } else {
            format!("{}:{}", self.status, self.code())
        }
    }

    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str, field: Option<&str>) {
        assert!(self.is_problem(), "not a problem document: {self:?}");
        assert_eq!(
            (self.status, self.code(), self.body["field"].as_str()),
            (status, code, field),
            "{self:?}"
        );
    }
}

/// The headers the agent's client sends: a content digest and a signature over `method`,
/// `base` + `path` and `body`, created at `created`, with `nonce` (else a random one).
#[allow(clippy::too_many_arguments)]
pub fn signed(
    base: &str,
    key: &SigningKey,
    keyid: &str,
    method: &Method,
    path: &str,
    body: &[u8],
    created: i64,
    nonce: Option<&str>,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    let uri: http::Uri = format!("{base}{path}").parse().unwrap();
    let signer = RequestSigner::new(key.clone(), keyid);
    match nonce {
        Some(n) => signer.sign_with_nonce(method, &uri, &mut h, body, created, n),
        None => signer.sign(method, &uri, &mut h, body, created),
    }
    .unwrap();
    h
}

pub fn json_type(mut h: HeaderMap) -> HeaderMap {
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
}

/// Sends exactly these headers and bytes.
pub async fn exchange(base: &str, method: Method, path: &str, headers: HeaderMap, body: Vec<u8>) -> Answer {
    // One client per test thread (each test has its own runtime); building one is slow.
    thread_local!(static HTTP: reqwest::Client = reqwest::Client::new());
    let resp = HTTP
        .with(reqwest::Client::clone)
        .request(method, format!("{base}{path}"))
        .headers(headers)
        .body(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = if content_type.starts_with("text/event-stream") {
        Value::Null
    } else {
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null)
    };
    Answer {
        status,
        content_type,
        headers,
        body,
    }
}

/// One request as `who` sends it, with `body` as JSON.
pub async fn call(base: &str, who: &Who, method: Method, path: &str, body: Option<&Value>) -> Answer {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
    let mut headers = match who {
        Who::Anonymous => HeaderMap::new(),
        Who::Bearer(t) => {
            HeaderMap::from_iter([(AUTHORIZATION, HeaderValue::try_from(format!("Bearer {t}")).unwrap())])
        }
        Who::Agent(key, id) => signed(base, key, id, &method, path, &bytes, now_secs(), None),
    };
    if body.is_some() {
        headers = json_type(headers);
    }
    exchange(base, method, path, headers, bytes).await
}

/// A copy of `v` with the field at `path` (`price.currency`) set to `value`.
pub fn set(v: &Value, path: &str, value: Value) -> Value {
    let mut out = v.clone();
    let mut cur = &mut out;
    for k in path.split('.') {
        cur = &mut cur[k];
    }
    *cur = value;
    out
}

/// Two providers, each with a live agent and an offering; customer A ordered two machines of A's
/// offering and customer B one of B's; each agent claimed its provider's work.
pub struct World {
    pub ctx: TestContext,
    /// An operator's API token.
    pub operator: String,
    /// Accounts with their first API tokens: providers A and B, customers A and B.
    pub pa: AccountCreated,
    pub pb: AccountCreated,
    pub ca: AccountCreated,
    pub cb: AccountCreated,
    pub agent_a: TestAgent,
    pub agent_b: TestAgent,
    pub offering_a: String,
    /// Customer A's first machine, its provision operation and agent A's lease on it.
    pub inst_a: String,
    pub op_a: String,
    pub gen_a: i64,
    /// The provision of customer A's second machine, also claimed by agent A.
    pub op_a2: String,
    pub gen_a2: i64,
    /// Customer B's machine.
    pub inst_b: String,
}

impl World {
    pub async fn build() -> World {
        let ctx = TestContext::sqlite().await;
        let operator = ctx
            .store
            .create_api_token(berth_store::Role::Operator, "", "security", berth_server::now_ms())
            .await
            .unwrap()
            .secret;
        let op = ctx.client(&operator);
        let pa = op.create_provider("provider-a").await.unwrap();
        let pb = op.create_provider("provider-b").await.unwrap();
        let ca = op.create_customer("customer-a").await.unwrap();
        let cb = op.create_customer("customer-b").await.unwrap();
        let agent_a = ctx.agent(&pa.id, &ctx.client(&pa.token)).await;
        let agent_b = ctx.agent(&pb.id, &ctx.client(&pb.token)).await;
        agent_a.client.heartbeat(&roomy()).await.unwrap();
        agent_b.client.heartbeat(&roomy()).await.unwrap();
        let offering_a = ctx
            .client(&pa.token)
            .create_offering(&small_offering())
            .await
            .unwrap()
            .id;
        let offering_b = ctx
            .client(&pb.token)
            .create_offering(&small_offering())
            .await
            .unwrap()
            .id;
        let customer_a = ctx.client(&ca.token);
        let a1 = customer_a.create_order(&order(&offering_a, "a1"), None).await.unwrap();
        customer_a.create_order(&order(&offering_a, "a2"), None).await.unwrap();
        let b1 = ctx
            .client(&cb.token)
            .create_order(&order(&offering_b, "b1"), None)
            .await
            .unwrap();
        let c1 = agent_a.client.claim(NO_WAIT).await.unwrap().unwrap();
        let c2 = agent_a.client.claim(NO_WAIT).await.unwrap().unwrap();
        let (first, second) = if Some(&c1.operation_id) == a1.operation_id.as_ref() {
            (c1, c2)
        } else {
            (c2, c1)
        };
        agent_b.client.claim(NO_WAIT).await.unwrap().unwrap();
        World {
            operator,
            inst_a: a1.instance_id,
            op_a: first.operation_id,
            gen_a: first.generation,
            op_a2: second.operation_id,
            gen_a2: second.generation,
            inst_b: b1.instance_id,
            ctx,
            pa,
            pb,
            ca,
            cb,
            agent_a,
            agent_b,
            offering_a,
        }
    }

    pub fn client(&self, token: &str) -> Client {
        self.ctx.client(token)
    }

    pub fn callers(&self) -> [(&'static str, Who); 8] {
        [
            ("anonymous", Who::Anonymous),
            ("operator", Who::Bearer(self.operator.clone())),
            ("provider A", Who::Bearer(self.pa.token.clone())),
            ("provider B", Who::Bearer(self.pb.token.clone())),
            ("customer A", Who::Bearer(self.ca.token.clone())),
            ("customer B", Who::Bearer(self.cb.token.clone())),
            ("agent A", Who::agent(&self.agent_a)),
            ("agent B", Who::agent(&self.agent_b)),
        ]
    }
}
