//! Shared test helpers: start an emulator and talk to it over loopback with reqwest.
#![allow(dead_code)]

use std::time::Duration;

use berth_pve_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Timings};
use serde_json::Value;

pub struct Api {
    pub h: EmulatorHandle,
    pub client: reqwest::Client,
    pub auth: String,
}

/// An answer: status, reason phrase, parsed body (Null if empty), raw body and headers.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub body: Value,
    pub raw: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    pub fn upid(&self) -> String {
        assert_eq!(
            self.status, 200,
            "expected a UPID, got {} {} {}",
            self.status, self.reason, self.raw
        );
        self.data().as_str().expect("UPID string").to_string()
    }
}

pub fn fast_config() -> EmulatorConfig {
    EmulatorConfig {
        timings: Timings::fast(),
        ..EmulatorConfig::default()
    }
}

pub async fn start() -> Api {
    start_with(fast_config()).await
}

pub async fn start_with(config: EmulatorConfig) -> Api {
    let tls = config.tls;
    let h = Emulator::start(config).await.expect("emulator starts");
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .tls_info(true);
    if tls {
        let pem = h.cert_pem().expect("TLS emulator has a cert");
        let cert = reqwest::Certificate::from_pem(pem.as_bytes()).expect("valid PEM");
        b = b.tls_certs_only([cert]);
    }
    let client = b.build().expect("client builds");
    let auth = format!("PVEAPIToken={}={}", h.token_id(), h.token_secret());
    Api { h, client, auth }
}

pub fn url_escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}/api2/json{path}", self.h.base_url())
    }

    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let res = rb.send().await.expect("request is answered");
        let status = res.status().as_u16();
        let reason = res
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .unwrap_or_else(|| res.status().canonical_reason().unwrap_or("").to_string());
        let headers = res.headers().clone();
        let raw = res.text().await.expect("body");
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&raw).expect("JSON body")
        };
        Resp {
            status,
            reason,
            body,
            raw,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(self.client.get(self.url(path)).header("Authorization", &self.auth))
            .await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(self.client.delete(self.url(path)).header("Authorization", &self.auth))
            .await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.send(
            self.client
                .post(self.url(path))
                .header("Authorization", &self.auth)
                .form(form),
        )
        .await
    }

    pub async fn put(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.send(
            self.client
                .put(self.url(path))
                .header("Authorization", &self.auth)
                .form(form),
        )
        .await
    }

    /// Polls the task at its node until it stops; returns the final status object.
    pub async fn wait_task(&self, upid: &str) -> Value {
        let node = upid.split(':').nth(1).expect("node in UPID").to_string();
        for _ in 0..2000 {
            let r = self
                .get(&format!("/nodes/{node}/tasks/{}/status", url_escape(upid)))
                .await;
            if r.status == 200 && r.data()["status"] == "stopped" {
                return r.data().clone();
            }
            assert!(
                r.status == 200 || r.status == 400,
                "unexpected task status answer {} {}",
                r.status,
                r.raw
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("task {upid} did not finish");
    }

    /// Runs a task-returning request and waits for it; returns the final status.
    pub async fn run_task(&self, r: Resp) -> Value {
        let upid = r.upid();
        self.wait_task(&upid).await
    }

    pub async fn task_log(&self, upid: &str) -> Vec<String> {
        let node = upid.split(':').nth(1).expect("node in UPID");
        let r = self
            .get(&format!("/nodes/{node}/tasks/{}/log?limit=500", url_escape(upid)))
            .await;
        assert_eq!(r.status, 200, "{}", r.raw);
        r.data()
            .as_array()
            .expect("log lines")
            .iter()
            .map(|l| l["t"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Clones template 9000 on pve1 into `newid` and waits for the task to finish OK.
    pub async fn clone_9000(&self, newid: u32, extra: &[(&str, &str)]) {
        let id = newid.to_string();
        let mut form = vec![("newid", id.as_str())];
        form.extend_from_slice(extra);
        let st = self
            .run_task(self.post("/nodes/pve1/qemu/9000/clone", &form).await)
            .await;
        assert_eq!(st["exitstatus"], "OK", "{st}");
    }

    pub fn guest(&self, vmid: u32) -> Option<berth_pve_emulator::GuestSnapshot> {
        self.h.guests().into_iter().find(|g| g.vmid == vmid)
    }
}
