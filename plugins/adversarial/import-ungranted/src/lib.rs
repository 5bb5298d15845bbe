//! Adversarial agent `import-ungranted`: uses host interfaces its manifest
//! does not grant. Its component imports `evos:plugin/kv` and
//! `wasi:http/outgoing-handler` (besides the granted `log`), so deploying it
//! with a manifest that grants only `log` must be refused, naming both
//! imports and the manifest lines that would grant them.

use evos_sdk::{Action, Agent, Error, Event, kv, log};
use http_client::{Method, Url};

const PROBE_URL: &str = "http://127.0.0.1:9/import-ungranted";

struct ImportUngranted;

impl Agent for ImportUngranted {
    fn handle(event: Event) -> Result<Vec<Action>, Error> {
        log::warn(&format!("event {}: using ungranted kv and http", event.id));
        kv::set("import-ungranted/probe", event.id.as_bytes())?;
        let url = Url::parse(PROBE_URL).map_err(Error::Internal)?;
        match http_client::send(Method::Get, &url, &[], &[]) {
            Ok(response) => Err(Error::Internal(format!(
                "ungranted HTTP request answered with HTTP {}",
                response.status
            ))),
            Err(e) => Err(Error::Denied(e.to_string())),
        }
    }
}

evos_sdk::export_agent!(ImportUngranted);
