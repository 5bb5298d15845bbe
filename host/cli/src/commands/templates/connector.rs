//! {{name}}: turns a JSON object with an "id", or an array of them, into
//! `{{name}}.received` events; records the actions it carries out.

use evos_sdk::{Action, Connector, Error, Event, json, log};
use serde_json::Value;

const SOURCE: &str = "{{name}}";

/// The records in a body: an object or an array of objects, each with a
/// string "id".
pub fn records(body: Value) -> Result<Vec<(String, Value)>, String> {
    let items = match body {
        Value::Array(items) => items,
        item @ Value::Object(_) => vec![item],
        _ => return Err("expected a JSON object or an array of objects".into()),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok((id.to_string(), item)),
            _ => Err(format!("record {i} has no string \"id\"")),
        })
        .collect()
}

struct Plugin;

impl Connector for Plugin {
    fn ingest(raw: Vec<u8>, _content_type: String) -> Result<Vec<Event>, Error> {
        let body: Value = json::parse_bytes(&raw)?;
        let records = records(body).map_err(Error::InvalidInput)?;
        records
            .iter()
            .map(|(id, item)| Event::new(id, &format!("{SOURCE}.received"), SOURCE, item))
            .collect()
    }

    fn execute(action: Action) -> Result<String, Error> {
        log::info(&format!("executing {} for {}", action.kind, action.event_id));
        Ok(format!("{} for {} recorded", action.kind, action.event_id))
    }
}

evos_sdk::export_connector!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_and_arrays_become_records_and_records_need_an_id() {
        assert_eq!(records(json!({"id": "a"})).unwrap().len(), 1);
        assert_eq!(records(json!([{"id": "a"}, {"id": "b"}])).unwrap().len(), 2);
        assert!(records(json!([{"id": "a"}, {"x": 1}])).unwrap_err().contains("record 1"));
        assert!(records(json!(3)).is_err());
    }
}
