//! A 100,000-row CSV through `POST /feeds/{name}`, streamed both ways: the server answers the
//! first rows while the client is still holding back the second half of the body (so it cannot
//! have buffered the file), and the CSV reader reports the largest row it ever held.
mod common;

use common::TestServer;
use futures_util::StreamExt;
use serde_json::Value;

/// 100,000 rows; `HUITONG_FEED_BULK_ROWS` sets fewer (a multiple of 2,000) to measure how the time
/// grows with the count.
fn rows() -> usize {
    std::env::var("HUITONG_FEED_BULK_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| n % 2000 == 0 && *n > 0)
        .unwrap_or(100_000)
}

fn write_feed(dir: &std::path::Path) {
    let feed = dir.join("feeds/bulk-observation");
    std::fs::create_dir_all(&feed).unwrap();
    std::fs::write(
        feed.join("schema.json"),
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "required": ["row_id", "item", "value"],
            "properties": {"row_id": {"type": "string"}, "item": {"type": "string"}, "value": {"type": "number"}}}"#,
    )
    .unwrap();
    std::fs::write(
        feed.join("mapping.toml"),
        r#"feed = "bulk-observation"
namespace = "bulk"
key = ["/row_id"]

[[resource]]
name = "obs"
type = "Observation"
id = ["/row_id"]
defaults = { status = "final" }

[[resource.field]]
from = "/item"
fhir = "code.text"

[[resource.field]]
from = "/value"
fhir = "valueQuantity.value"
"#,
    )
    .unwrap();
}

fn row(i: usize) -> String {
    format!("R{i:06},体温 第{i}次,36.{}\n", i % 10)
}

// Measured (debug profile, `nice -n 19`, the shared 2-core machine under load from other builds):
// 4,000 rows 3.0 s, 8,000 7.1 s, 16,000 12.5 s, 32,000 24.7 s — linear, about 0.77 ms a row (a
// transaction each: schema, mapping, core validation, the Observation and its Provenance); the
// full 100,000 rows passed in 95.8 s. It finishes; nothing in it is quadratic, it is only too long
// for every CI run. Run it with `cargo test --test feed_bulk -- --ignored` (`HUITONG_FEED_BULK_ROWS`
// for fewer rows).
#[ignore = "about 100 s (100,000 transactions in the dev profile); run with --ignored"]
#[tokio::test]
async fn a_100000_row_csv_streams_with_bounded_memory() {
    let total = rows();
    let mappings = tempfile::tempdir().unwrap();
    write_feed(mappings.path());
    let m = mappings.path().to_path_buf();
    let srv = TestServer::start_in(tempfile::tempdir().unwrap(), move |s| s.mappings_dir = m).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }));
    let send = tokio::spawn({
        let http = srv.http.clone();
        let url = format!("{}/feeds/bulk-observation", srv.root);
        async move {
            http.post(url)
                .header("content-type", "text/csv; charset=utf-8")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    });
    // The first half, in chunks of 1,000 rows.
    let mut chunk = String::from("row_id,item,value\n");
    for i in 1..=total / 2 {
        chunk.push_str(&row(i));
        if i % 1000 == 0 {
            tx.send(Ok(std::mem::take(&mut chunk).into_bytes()))
                .await
                .unwrap();
        }
    }
    let resp = send.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut text = Vec::new();
    // Outcomes arrive while the second half has not been sent: the server streams.
    while !String::from_utf8_lossy(&text).contains("\"row\":1000,") {
        let c = stream.next().await.expect("response ended early").unwrap();
        text.extend_from_slice(&c);
    }
    println!(
        "feed_bulk: first outcomes received after {} of {total} rows were sent",
        total / 2
    );
    let sender = tokio::spawn(async move {
        let mut chunk = String::new();
        for i in total / 2 + 1..=total {
            chunk.push_str(&row(i));
            if i % 1000 == 0 {
                tx.send(Ok(std::mem::take(&mut chunk).into_bytes()))
                    .await
                    .unwrap();
            }
        }
    });
    while let Some(c) = stream.next().await {
        text.extend_from_slice(&c.unwrap());
    }
    sender.await.unwrap();
    let v: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(
        v["accepted"].as_u64(),
        Some(total as u64),
        "rejected: {}",
        v["rejected"]
    );
    assert_eq!(v["records"].as_array().unwrap().len(), total);
    assert_eq!(v["records"][total - 1]["row"], total);
    let peak = v["peak_row_bytes"].as_u64().unwrap();
    // The longest row is 33 bytes; the reader never held more than one row.
    let longest = (1..=total).map(|i| row(i).len()).max().unwrap() as u64;
    println!(
        "feed_bulk: {total} rows accepted, the CSV reader held at most {peak} bytes of a row (longest row {longest})"
    );
    assert!(peak <= longest, "{peak} > {longest}");
    let (s, o) = common::json_of(
        srv.get(&format!(
            "Observation/{}",
            huitong::mapping::ids::resource_id("Observation", "bulk", &format!("R{total:06}"))
        ))
        .await,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(o["code"]["text"], format!("体温 第{total}次"));
    srv.stop().await;
}
