//! The PVE emulator and a client for it, as every end-to-end test here uses them.
#![allow(dead_code)]

use std::time::Duration;

use berth_decl::apply::{ApplyOptions, apply};
use berth_decl::observe::observe;
use berth_proxmox::client::{ClientOptions, Fingerprint, PveClient, RetryPolicy, TlsOptions};
use berth_pve_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault, FaultRule, Timings};

pub async fn emulator() -> EmulatorHandle {
    Emulator::start(EmulatorConfig {
        timings: Timings::fast(),
        schema_path: EmulatorConfig::default_schema_path(),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap()
}

/// Pinned, without retries (a test sees each answer), polling tasks every 10 ms.
pub fn client(emu: &EmulatorHandle) -> PveClient {
    let mut o = ClientOptions::new(
        &emu.base_url(),
        &emu.token_id(),
        berth_core::Secret::new(emu.token_secret()),
    );
    o.tls = TlsOptions {
        fingerprints: vec![Fingerprint::parse(&emu.fingerprint().unwrap()).unwrap()],
        ..TlsOptions::default()
    };
    o.retry = RetryPolicy::NEVER;
    o.poll_interval = Duration::from_millis(10);
    PveClient::new(o).unwrap()
}

/// Plans `text`, applies it with `opts`, and checks that planning again finds nothing left.
pub async fn settle_with(c: &PveClient, text: &str, opts: ApplyOptions) -> berth_decl::Plan {
    let d = berth_decl::parse("site.toml", text).unwrap();
    let p = berth_decl::plan(&d, &observe(c).await.unwrap(), "h").unwrap();
    apply(c, &p, opts)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", berth_decl::render::human(&p)));
    let again = berth_decl::plan(&d, &observe(c).await.unwrap(), "h").unwrap();
    assert!(again.is_empty(), "{}", berth_decl::render::human(&again));
    p
}

/// The next `method` request whose path holds `path` meets `fault`.
pub fn fault_once(emu: &EmulatorHandle, method: &str, path: &str, fault: Fault) {
    emu.inject(FaultRule {
        method: Some(method.into()),
        path_contains: path.into(),
        fault,
        times: 1,
    });
}

/// A 500 answer, as a fault.
pub fn http_500() -> Fault {
    Fault::Http {
        status: 500,
        message: "Internal Server Error".into(),
    }
}
