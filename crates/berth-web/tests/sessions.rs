//! The dashboard's security over real HTTP: sign-in makes an HttpOnly `SameSite=Strict`
//! session that is not the token; sign-out ends it; a POST without proof that it came from this
//! site is refused and changes nothing; another tenant's pages answer 404 like the API; pages
//! carry a strict Content-Security-Policy and never the token.

use std::sync::Arc;

use berth_api::client::{Auth, Client};
use berth_api::wire::*;
use berth_store::{Role, SqliteStore, Store};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};

const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test@berth";
const AGE_KEY: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

struct World {
    url: String,
    http: reqwest::Client,
    alice_token: String,
    bob_token: String,
    offering: String,
    alice: Client,
    instance: String,
    operator: Client,
    _server: berth_server::Running,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("berth.db")).await.unwrap());
    let op = store
        .create_api_token(Role::Operator, "", "test", berth_server::now_ms())
        .await
        .unwrap();
    let cfg =
        berth_server::ServerConfig::parse(
            "listen = \"127.0.0.1:0\"\n[database]\nsqlite = \"unused\"\n\
             [limits]\ncredential_rate = 100000\ncredential_burst = 100000\naddress_rate = 100000\naddress_burst = 100000\n",
            "t",
        )
        .unwrap();
    let server = berth_server::start_app(cfg, store, berth_web::app).await.unwrap();
    let url = format!("http://{}", server.addr);
    let operator = Client::new(&url, Auth::Bearer(op.secret));
    let p = operator.create_provider("acme").await.unwrap();
    let provider = Client::new(&url, Auth::Bearer(p.token));
    let offering = provider
        .create_offering(&OfferingSpec {
            name: "small".into(),
            cores: 1,
            memory_mib: 1024,
            disk_gib: 10,
            bandwidth_mbps: None,
            template: None,
            price: None,
            region: None,
            labels: Default::default(),
            post_provision_commands: vec![],
        })
        .await
        .unwrap()
        .id;
    let a = operator.create_customer("alice").await.unwrap();
    let b = operator.create_customer("bob").await.unwrap();
    let alice = Client::new(&url, Auth::Bearer(a.token.clone()));
    // Recorded, not built: no agent is needed for these pages.
    let instance = alice
        .create_order(
            &CreateOrder {
                offering_id: offering.clone(),
                name: "web1".into(),
                ssh_public_key: SSH_KEY.into(),
                requester_public_key: Some(AGE_KEY.into()),
                skip_post_provision: false,
                provision: false,
            },
            None,
        )
        .await
        .unwrap()
        .instance_id;
    World {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        url,
        alice_token: a.token,
        bob_token: b.token,
        offering,
        alice,
        instance,
        operator,
        _server: server,
        _dir: dir,
    }
}

impl World {
    fn same_origin(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("origin", HeaderValue::from_str(&self.url).unwrap());
        h
    }

    /// Signs in; returns the `Cookie` header value.
    async fn sign_in(&self, token: &str) -> String {
        let r = self
            .http
            .post(format!("{}/ui/sign-in", self.url))
            .headers(self.same_origin())
            .form(&[("token", token), ("next", "/ui/instances")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/ui/instances");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
            assert!(set.contains(attr), "{attr} in {set}");
        }
        assert!(!set.contains(token), "the cookie is a session, not the token");
        set.split(';').next().unwrap().to_owned()
    }

    async fn get(&self, cookie: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn sessions_begin_with_a_token_and_end_at_sign_out() {
    let w = world().await;
    let r = w
        .http
        .post(format!("{}/ui/sign-in", w.url))
        .headers(w.same_origin())
        .form(&[("token", "berth_tok_wrong"), ("next", "/ui")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("unknown or revoked API token"));

    let anon = w.get("", "/ui/instances").await;
    assert_eq!(anon.status(), StatusCode::SEE_OTHER, "signed out: to the sign-in page");
    assert_eq!(anon.headers()["location"], "/ui/sign-in?next=%2Fui%2Finstances");

    let cookie = w.sign_in(&w.alice_token).await;
    let page = w.get(&cookie, "/ui/instances").await;
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(page.headers()["cache-control"], "no-store");
    let body = page.text().await.unwrap();
    assert!(body.contains("web1"));
    assert!(!body.contains(&w.alice_token), "the token never reaches a page");

    let out = w
        .http
        .post(format!("{}/ui/sign-out", w.url))
        .headers(w.same_origin())
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(
        w.get(&cookie, "/ui/instances").await.status(),
        StatusCode::SEE_OTHER,
        "the old cookie is worthless after sign-out"
    );
}

#[tokio::test]
async fn a_post_without_proof_of_origin_is_refused_and_changes_nothing() {
    let w = world().await;
    let cookie = w.sign_in(&w.alice_token).await;
    let order = [
        ("name", "evil1"),
        ("ssh_public_key", SSH_KEY),
        ("requester_public_key", AGE_KEY),
        ("key", "k1"),
        ("build_later", "1"),
    ];
    let path = format!("{}/ui/order/{}", w.url, w.offering);
    let bare = w
        .http
        .post(&path)
        .header("cookie", &cookie)
        .form(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::FORBIDDEN, "no Origin, no Sec-Fetch-Site");
    let cross = w
        .http
        .post(&path)
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .header("origin", "https://evil.example")
        .form(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let terminate = w
        .http
        .post(format!("{}/ui/instances/{}/terminate", w.url, w.instance))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(terminate.status(), StatusCode::FORBIDDEN);
    let mine = w.alice.instances().await.unwrap();
    assert_eq!(mine.len(), 1, "no order was placed");
    assert_eq!(mine[0].status, "pending", "nothing was terminated");

    // From the site itself the same order goes through, once per form key.
    for _ in 0..2 {
        let ok = w
            .http
            .post(&path)
            .header("cookie", &cookie)
            .header("sec-fetch-site", "same-origin")
            .form(&order)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    }
    assert_eq!(w.alice.instances().await.unwrap().len(), 2, "a resent form orders once");
}

#[tokio::test]
async fn another_tenants_pages_answer_404() {
    let w = world().await;
    let bob = w.sign_in(&w.bob_token).await;
    for path in [
        format!("/ui/instances/{}", w.instance),
        "/ui/instances/no-such-instance".to_owned(),
    ] {
        let r = w.get(&bob, &path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains("Not found") && !body.contains("web1"), "{path}: {body}");
    }
    let list = w.get(&bob, "/ui/instances").await.text().await.unwrap();
    assert!(!list.contains("web1"), "bob's list has only bob's machines");
    let r = w
        .http
        .post(format!("{}/ui/instances/{}/terminate", w.url, w.instance))
        .header("cookie", &bob)
        .headers(w.same_origin())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(w.alice.instances().await.unwrap()[0].status, "pending");
    // Customers have no provider pages; the audit log is the operators'.
    assert_eq!(w.get(&bob, "/ui/audit").await.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_bulk_action_acts_on_each_selected_instance_the_caller_may_touch() {
    let w = world().await;
    let bob = w.sign_in(&w.bob_token).await;
    let body = format!("action=terminate&key=b1&ids={}&ids=no-such", w.instance);
    let r = w
        .http
        .post(format!("{}/ui/instances/bulk", w.url))
        .header("cookie", &bob)
        .header("content-type", "application/x-www-form-urlencoded")
        .headers(w.same_origin())
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(!page.contains("web1") && page.contains("not found"), "{page}");
    assert_eq!(
        w.alice.instances().await.unwrap()[0].status,
        "pending",
        "bob touched nothing"
    );

    let alice = w.sign_in(&w.alice_token).await;
    let r = w
        .http
        .post(format!("{}/ui/instances/bulk", w.url))
        .header("cookie", &alice)
        .header("content-type", "application/x-www-form-urlencoded")
        .headers(w.same_origin())
        .body(body)
        .send()
        .await
        .unwrap();
    let page = r.text().await.unwrap();
    assert!(page.contains("web1") && page.contains("/ui/operations/"), "{page}");
    assert_eq!(w.alice.instances().await.unwrap()[0].status, "terminating");
}

#[tokio::test]
async fn saved_keys_fill_the_order_form_and_private_keys_are_refused() {
    let w = world().await;
    let alice = w.sign_in(&w.alice_token).await;
    let post = |path: &str, body: Vec<(&str, &str)>| {
        w.http
            .post(format!("{}{path}", w.url))
            .header("cookie", &alice)
            .headers(w.same_origin())
            .form(&body)
            .send()
    };
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----";
    let r = post(
        "/ui/keys",
        vec![("kind", "ssh"), ("name", "oops"), ("public_key", private)],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(page.contains("id=\"public_key-error\""), "the field is named: {page}");
    assert!(
        !page.contains("b3BlbnNzaC1rZXktdjEAAAAA"),
        "a private key is not echoed back into the page"
    );
    assert!(w.alice.keys().await.unwrap().is_empty(), "nothing saved");

    for (kind, name, key) in [("ssh", "laptop", SSH_KEY), ("age", "mine", AGE_KEY)] {
        let r = post("/ui/keys", vec![("kind", kind), ("name", name), ("public_key", key)])
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
    }
    let keys = w.alice.keys().await.unwrap();
    let ssh = keys.iter().find(|k| k.kind == "ssh").unwrap().id.clone();
    let form = w
        .get(&alice, &format!("/ui/order/{}", w.offering))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        form.contains(&format!("<option value=\"{ssh}\"")),
        "the saved SSH key is offered"
    );
    assert!(
        form.contains(&format!("value=\"{AGE_KEY}\"")),
        "the saved age key is filled in"
    );

    let r = post(
        &format!("/ui/order/{}", w.offering),
        vec![
            ("name", "keyed1"),
            ("ssh_public_key", ""),
            ("saved_ssh", &ssh),
            ("requester_public_key", AGE_KEY),
            ("build_later", "1"),
            ("key", "k-keyed"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let made = w.alice.instances().await.unwrap();
    let keyed = made.iter().find(|i| i.name == "keyed1").expect("ordered");
    assert_eq!(keyed.ssh_public_key, SSH_KEY);
    // Bob cannot remove Alice's key.
    let bob = w.sign_in(&w.bob_token).await;
    let r = w
        .http
        .post(format!("{}/ui/keys/{ssh}/delete", w.url))
        .header("cookie", &bob)
        .headers(w.same_origin())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(w.alice.keys().await.unwrap().len(), 2);
}

/// A list longer than the API's largest page is shown whole: the dashboard follows the pages.
#[tokio::test]
async fn a_list_longer_than_one_api_page_is_shown_whole() {
    let w = world().await;
    let alice_id = w.alice.instance(&w.instance).await.unwrap().customer_id.unwrap();
    let room = SetQuota {
        instances: Some(2000),
        pending_instances: Some(2000),
        ..Default::default()
    };
    w.operator.set_quota(&alice_id, &room).await.unwrap();
    for n in 0..1050 {
        w.alice
            .create_order(
                &CreateOrder {
                    offering_id: w.offering.clone(),
                    name: format!("many{n}"),
                    ssh_public_key: SSH_KEY.into(),
                    requester_public_key: Some(AGE_KEY.into()),
                    skip_post_provision: false,
                    provision: false,
                },
                None,
            )
            .await
            .unwrap();
    }
    let alice = w.sign_in(&w.alice_token).await;
    let page = w.get(&alice, "/ui/instances?page=22").await.text().await.unwrap();
    assert!(page.contains("1051 instances, page 22 of 22"), "{page}");
    assert!(page.contains("All (1051)"), "{page}");
    // The oldest is on the last page (newest first).
    assert!(page.contains("web1"), "{page}");
}
