//! The JSON Patch a patch rule (a later message about a stored resource: 2203, 2206, the
//! cancellations) makes of its mapped elements.
//!
//! Objects merge: an element the record maps into an object the stored resource already has
//! changes only what the record maps (`period.start` keeps the stored `period.end`), so nothing a
//! feed wrote earlier is lost to a later one. Lists and values are replaced whole: a list is the
//! record's answer as a whole (the diagnoses of a re-sent 2203), and merging items by position
//! would pair unrelated entries.

use serde_json::{Map, Value, json};

/// The operations turning `current` into `current` with `changes` merged in, in key order.
pub fn operations(current: &Value, changes: &Map<String, Value>) -> Vec<Value> {
    let mut ops = Vec::new();
    merge(current, changes, &mut String::new(), &mut ops);
    ops
}

fn merge(current: &Value, changes: &Map<String, Value>, at: &mut String, ops: &mut Vec<Value>) {
    for (k, v) in changes {
        let len = at.len();
        at.push('/');
        at.push_str(&k.replace('~', "~0").replace('/', "~1"));
        match (current.get(k), v) {
            (Some(old @ Value::Object(_)), Value::Object(inner)) => merge(old, inner, at, ops),
            // Unchanged: no operation, so the patch says exactly what the record changed.
            (Some(old), new) if old == new => {}
            _ => ops.push(json!({"op": "add", "path": at.clone(), "value": v})),
        }
        at.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_merge_lists_and_values_are_replaced() {
        let current = json!({"resourceType": "Encounter", "status": "arrived",
            "period": {"start": "2026-11-30T09:05:12+08:00", "end": "2026-11-30T09:40:00+08:00"},
            "diagnosis": [{"condition": {"reference": "Condition/a"}}], "class": {"code": "AMB"}});
        let changes = json!({"status": "in-progress", "period": {"start": "2026-11-30T09:06:00+08:00"},
            "diagnosis": [{"condition": {"reference": "Condition/b"}}], "class": {"code": "AMB"},
            "type": [{"text": "普通门诊"}]});
        let ops = operations(&current, changes.as_object().unwrap());
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/status", "value": "in-progress"}),
                json!({"op": "add", "path": "/period/start", "value": "2026-11-30T09:06:00+08:00"}),
                json!({"op": "add", "path": "/diagnosis", "value": [{"condition": {"reference": "Condition/b"}}]}),
                json!({"op": "add", "path": "/type", "value": [{"text": "普通门诊"}]}),
            ]
        );
        let mut doc = current.clone();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["period"]["end"], "2026-11-30T09:40:00+08:00");
    }
}
