//! A real third-party client against the real server: the `fhir-sdk` crate's REST client (R4B
//! models, close enough to R4 for Patient, Encounter, Observation and Bundle) drives create, read,
//! vread, update, delete, history, batch and transaction, and parses every answer with its own
//! model. Whatever the SDK cannot parse or does not accept is a server bug, not a test quirk.

mod common;

use fhir_sdk::client::{Client, Error, ResourceWrite};
use fhir_sdk::r4b::codes::{
    AdministrativeGender, BundleType, EncounterStatus, FHIRVersion, HTTPVerb, IssueSeverity,
    ObservationStatus,
};
use fhir_sdk::r4b::resources::{
    Bundle, Encounter, Observation, ObservationValue, Patient, Resource, ResourceType,
};
use fhir_sdk::r4b::types::{CodeableConcept, Coding, HumanName, Identifier, Quantity, Reference};
use fhir_sdk::version::FhirR4B;
use fhir_sdk::{Date, StatusCode};
use std::str::FromStr;

type R4bClient = Client<FhirR4B>;

fn client(server: &common::TestServer) -> R4bClient {
    Client::new(server.base.parse().expect("base URL")).expect("fhir-sdk client")
}

fn patient(family: &str, given: &str, mrn: &str) -> Patient {
    Patient::builder()
        .identifier(vec![Some(
            Identifier::builder()
                .system("urn:oid:2.16.840.1.113883.4.1".to_owned())
                .value(mrn.to_owned())
                .build()
                .unwrap(),
        )])
        .name(vec![Some(
            HumanName::builder()
                .family(family.to_owned())
                .given(vec![Some(given.to_owned())])
                .build()
                .unwrap(),
        )])
        .gender(AdministrativeGender::Female)
        .birth_date(Date::from_str("1984-03-07").unwrap())
        .active(true)
        .build()
        .unwrap()
}

fn family(p: &Patient) -> Option<&str> {
    p.name.first()?.as_ref()?.family.as_deref()
}

fn version_id(p: &Patient) -> Option<&str> {
    p.meta.as_ref()?.version_id.as_deref()
}

fn loinc(code: &str, display: &str) -> CodeableConcept {
    CodeableConcept::builder()
        .coding(vec![Some(
            Coding::builder()
                .system("http://loinc.org".to_owned())
                .code(code.to_owned())
                .display(display.to_owned())
                .build()
                .unwrap(),
        )])
        .build()
        .unwrap()
}

/// The status code and first issue severity of an error the SDK built from an OperationOutcome.
fn outcome_status(err: &Error) -> (StatusCode, IssueSeverity) {
    match err {
        Error::OperationOutcomeR4B(status, oo) => {
            let issue = oo
                .issue
                .first()
                .and_then(Option::as_ref)
                .expect("OperationOutcome with an issue");
            (*status, issue.severity)
        }
        other => panic!("expected an OperationOutcome error, got {other:?}"),
    }
}

/// A status line such as `201 Created`: its code.
fn status_code(line: &str) -> u16 {
    line.split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line '{line}'"))
}

/// `Type/id/_history/vid` split into its parts.
fn location_parts(location: &str) -> (String, String, String) {
    let parts: Vec<&str> = location
        .trim_start_matches('/')
        .rsplit('/')
        .take(4)
        .collect();
    assert_eq!(parts.len(), 4, "location {location}");
    assert_eq!(parts[1], "_history", "location {location}");
    (
        parts[3].to_string(),
        parts[2].to_string(),
        parts[0].to_string(),
    )
}

#[tokio::test]
async fn capability_statement_parses_as_a_fhir_4_0_1_server() {
    let s = common::TestServer::start().await;
    let client = client(&s);
    let cs = client
        .capabilities()
        .await
        .expect("CapabilityStatement parses with the SDK's model");
    assert_eq!(cs.fhir_version, FHIRVersion::N401);
    let rest = cs.rest.first().and_then(Option::as_ref).expect("rest");
    let patient = rest
        .resource
        .iter()
        .flatten()
        .find(|r| r.r#type.as_ref() == "Patient")
        .expect("Patient in CapabilityStatement.rest.resource");
    assert!(
        !patient.interaction.is_empty(),
        "Patient interactions listed"
    );
    s.stop().await;
}

#[tokio::test]
async fn create_read_update_delete_through_the_sdk() {
    let s = common::TestServer::start().await;
    let client = client(&s);

    // Create: the SDK takes id and version from Location (or ETag) and writes them into the resource.
    let mut p = patient("Wang", "Fang", "MRN-0001");
    let id = p.create(&client).await.expect("create");
    assert!(
        !id.is_empty() && id.len() <= 64,
        "server-assigned id '{id}'"
    );
    assert_eq!(p.id.as_deref(), Some(id.as_str()));
    assert_eq!(
        version_id(&p),
        Some("1"),
        "version from the Location header"
    );

    // Read: the server's JSON parses into the SDK's model with the values we sent.
    let read: Patient = client
        .read(&id)
        .await
        .expect("read")
        .expect("patient exists");
    assert_eq!(read.id.as_deref(), Some(id.as_str()));
    assert_eq!(version_id(&read), Some("1"));
    assert!(
        read.meta
            .as_ref()
            .and_then(|m| m.last_updated.as_ref())
            .is_some(),
        "meta.lastUpdated set by the server"
    );
    assert_eq!(family(&read), Some("Wang"));
    assert_eq!(read.gender, Some(AdministrativeGender::Female));
    assert_eq!(read.birth_date, Some(Date::from_str("1984-03-07").unwrap()));
    assert_eq!(read.active, Some(true));
    assert_eq!(
        read.identifier[0].as_ref().unwrap().value.as_deref(),
        Some("MRN-0001")
    );

    // Version-aware update (If-Match: W/"1"): not a create, new version 2 from the ETag.
    let mut p = read;
    p.name[0].as_mut().unwrap().family = Some("Li".to_owned());
    p.active = Some(false);
    let created = p.update(true, &client).await.expect("conditional update");
    assert!(
        !created,
        "update of an existing resource answers 200, not 201"
    );
    assert_eq!(version_id(&p), Some("2"), "version from the ETag");
    let read: Patient = client
        .read(&id)
        .await
        .expect("read")
        .expect("patient exists");
    assert_eq!(family(&read), Some("Li"));
    assert_eq!(read.active, Some(false));
    assert_eq!(version_id(&read), Some("2"));

    // A stale If-Match is refused with an OperationOutcome and changes nothing.
    let mut stale = read.clone();
    stale.meta.as_mut().unwrap().version_id = Some("1".to_owned());
    stale.name[0].as_mut().unwrap().family = Some("Stale".to_owned());
    let err = stale
        .update(true, &client)
        .await
        .expect_err("stale If-Match must fail");
    assert_eq!(
        outcome_status(&err),
        (StatusCode::PRECONDITION_FAILED, IssueSeverity::Error)
    );
    let read: Patient = client
        .read(&id)
        .await
        .expect("read")
        .expect("patient exists");
    assert_eq!((family(&read), version_id(&read)), (Some("Li"), Some("2")));

    // vread of the first version still gives the original name.
    let v1: Patient = client
        .read_version(&id, "1")
        .await
        .expect("vread")
        .expect("version 1 exists");
    assert_eq!((family(&v1), version_id(&v1)), (Some("Wang"), Some("1")));

    // Update of an id that does not exist yet creates it (client-assigned id): 201, version 1.
    let mut chosen = patient("Zhao", "Lei", "MRN-0002");
    chosen.id = Some("sdk-chosen-id".to_owned());
    let created = chosen
        .update(false, &client)
        .await
        .expect("create on update");
    assert!(created, "create-on-update answers 201");
    assert_eq!(version_id(&chosen), Some("1"));
    let read: Patient = client
        .read("sdk-chosen-id")
        .await
        .expect("read")
        .expect("created by PUT");
    assert_eq!(family(&read), Some("Zhao"));

    // Delete; the SDK reports both 404 and 410 as `None`, so check the status with a raw request too.
    read.delete(&client).await.expect("delete");
    assert_eq!(
        client
            .read::<Patient>("sdk-chosen-id")
            .await
            .expect("read after delete"),
        None
    );
    let url = format!("{}/Patient/sdk-chosen-id", s.base);
    let resp = client
        .send_custom_request(move |http| http.get(url))
        .await
        .expect("raw GET");
    assert_eq!(
        resp.status(),
        StatusCode::GONE,
        "a deleted resource reads as 410"
    );
    let never = format!("{}/Patient/never-existed", s.base);
    let resp = client
        .send_custom_request(move |http| http.get(never))
        .await
        .expect("raw GET");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        client
            .read::<Patient>("never-existed")
            .await
            .expect("read of an unknown id"),
        None
    );
    // Deleting again is not an error.
    client
        .delete(ResourceType::Patient, "sdk-chosen-id")
        .await
        .expect("second delete");
    // Older versions stay readable after the delete.
    let v1: Patient = client
        .read_version("sdk-chosen-id", "1")
        .await
        .expect("vread")
        .expect("version 1 kept");
    assert_eq!(family(&v1), Some("Zhao"));

    // History of the first patient, newest first: the two versions, parsed by the SDK.
    let history = client
        .history::<Patient>(Some(&id))
        .await
        .expect("instance history")
        .into_inner();
    assert_eq!(history.r#type, BundleType::History);
    let versions: Vec<(Option<String>, Option<String>)> = history
        .entry
        .iter()
        .flatten()
        .map(|e| match e.resource.as_ref() {
            Some(Resource::Patient(p)) => (
                version_id(p).map(str::to_owned),
                family(p).map(str::to_owned),
            ),
            other => panic!("history entry {other:?}"),
        })
        .collect();
    assert_eq!(
        versions,
        vec![
            (Some("2".into()), Some("Li".into())),
            (Some("1".into()), Some("Wang".into()))
        ],
        "history newest first"
    );

    // History of the deleted one: the tombstone first, as a DELETE request without a resource.
    let history = client
        .history::<Patient>(Some("sdk-chosen-id"))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.entry.len(), 2);
    let tombstone = history.entry[0].as_ref().unwrap();
    assert!(tombstone.resource.is_none());
    assert_eq!(
        tombstone.request.as_ref().map(|r| r.method),
        Some(HTTPVerb::Delete)
    );
    s.stop().await;
}

#[tokio::test]
async fn transaction_through_the_sdk() {
    let s = common::TestServer::start().await;
    let client = client(&s);

    let mut doomed = patient("Sun", "Mei", "MRN-0100");
    let doomed_id = doomed.create(&client).await.expect("create");
    let mut kept = patient("Zhou", "Jie", "MRN-0101");
    let kept_id = kept.create(&client).await.expect("create");
    let mut changed = patient("Wu", "Hao", "MRN-0102");
    let changed_id = changed.create(&client).await.expect("create");

    let mut tx = client.transaction();
    tx.delete(ResourceType::Patient, &doomed_id);
    tx.read(ResourceType::Patient, &kept_id);
    changed.name[0].as_mut().unwrap().family = Some("Zheng".to_owned());
    tx.update(changed.clone(), true)
        .expect("update entry (If-Match W/\"1\")");
    let new_patient = tx.create(patient("Chen", "Jing", "MRN-0103"));
    let encounter = tx.create(
        Encounter::builder()
            .status(EncounterStatus::Finished)
            .class(
                Coding::builder()
                    .system("http://terminology.hl7.org/CodeSystem/v3-ActCode".to_owned())
                    .code("AMB".to_owned())
                    .build()
                    .unwrap(),
            )
            .subject(
                Reference::builder()
                    .reference(new_patient.clone())
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    );
    tx.create(
        Observation::builder()
            .status(ObservationStatus::Final)
            .code(loinc("29463-7", "Body weight"))
            .subject(
                Reference::builder()
                    .reference(new_patient.clone())
                    .build()
                    .unwrap(),
            )
            .encounter(
                Reference::builder()
                    .reference(encounter.clone())
                    .build()
                    .unwrap(),
            )
            .value(ObservationValue::Quantity(
                Quantity::builder()
                    .value(61.5)
                    .unit("kg".to_owned())
                    .system("http://unitsofmeasure.org".to_owned())
                    .code("kg".to_owned())
                    .build()
                    .unwrap(),
            ))
            .build()
            .unwrap(),
    );
    let response: Bundle = tx.send().await.expect("transaction");

    assert_eq!(response.r#type, BundleType::TransactionResponse);
    let entries: Vec<_> = response
        .entry
        .iter()
        .map(|e| e.as_ref().expect("entry"))
        .collect();
    assert_eq!(
        entries.len(),
        6,
        "one response entry per request entry, in request order"
    );
    let responses: Vec<_> = entries
        .iter()
        .map(|e| e.response.as_ref().expect("entry.response"))
        .collect();
    let codes: Vec<u16> = responses.iter().map(|r| status_code(&r.status)).collect();
    assert_eq!(
        codes,
        vec![200, 200, 200, 201, 201, 201],
        "statuses {responses:?}"
    );

    // GET entry: the resource itself.
    match entries[1].resource.as_ref() {
        Some(Resource::Patient(p)) => assert_eq!(
            (p.id.as_deref(), family(p)),
            (Some(kept_id.as_str()), Some("Zhou"))
        ),
        other => panic!("GET entry resource {other:?}"),
    }
    // PUT entry: version 2 of the same id.
    let (ty, id, vid) = location_parts(responses[2].location.as_deref().expect("PUT location"));
    assert_eq!(
        (ty.as_str(), id.as_str(), vid.as_str()),
        ("Patient", changed_id.as_str(), "2")
    );
    assert_eq!(responses[2].etag.as_deref(), Some("W/\"2\""));
    // POST entries: new server ids, version 1.
    let mut created = Vec::new();
    for (r, want) in responses[3..]
        .iter()
        .zip(["Patient", "Encounter", "Observation"])
    {
        let (ty, id, vid) = location_parts(r.location.as_deref().expect("POST location"));
        assert_eq!(
            (ty.as_str(), vid.as_str()),
            (want, "1"),
            "location {:?}",
            r.location
        );
        assert_eq!(r.etag.as_deref(), Some("W/\"1\""));
        assert!(r.last_modified.is_some(), "lastModified");
        created.push(id);
    }
    let (patient_id, encounter_id, observation_id) = (&created[0], &created[1], &created[2]);

    // The urn:uuid references were rewritten to the ids the server assigned.
    let enc: Encounter = client
        .read(encounter_id)
        .await
        .expect("read")
        .expect("encounter");
    let subject = enc.subject.as_ref().and_then(|r| r.reference.as_deref());
    assert_eq!(subject, Some(format!("Patient/{patient_id}").as_str()));
    let obs: Observation = client
        .read(observation_id)
        .await
        .expect("read")
        .expect("observation");
    assert_eq!(
        obs.subject.as_ref().and_then(|r| r.reference.as_deref()),
        Some(format!("Patient/{patient_id}").as_str())
    );
    assert_eq!(
        obs.encounter.as_ref().and_then(|r| r.reference.as_deref()),
        Some(format!("Encounter/{encounter_id}").as_str())
    );
    // The SDK models choice types as `#[serde(flatten)] Option<...>`; with serde_json's
    // `arbitrary_precision` (enabled by huitong and unified into this test binary) a number inside
    // a flattened field fails to deserialize and serde turns that into `None` (a valueString
    // parses fine). The server's JSON is right, so the value is checked on the raw body too.
    match obs.value.as_ref() {
        None => {}
        Some(ObservationValue::Quantity(q)) => {
            assert_eq!((q.value, q.unit.as_deref()), (Some(61.5), Some("kg")))
        }
        Some(other) => panic!("Observation.value {other:?}"),
    }
    let url = format!("{}/Observation/{observation_id}", s.base);
    let raw = client
        .send_custom_request(move |http| http.get(url))
        .await
        .expect("raw GET");
    let raw: serde_json::Value = raw.json().await.expect("JSON");
    assert_eq!(raw["valueQuantity"]["value"].as_f64(), Some(61.5), "{raw}");
    assert_eq!(raw["valueQuantity"]["unit"], "kg");
    let new: Patient = client
        .read(patient_id)
        .await
        .expect("read")
        .expect("patient");
    assert_eq!(family(&new), Some("Chen"));
    // Referenced reads resolve through the SDK as well.
    match client
        .read_referenced(enc.subject.as_ref().unwrap())
        .await
        .expect("read_referenced")
    {
        Resource::Patient(p) => assert_eq!(p.id.as_deref(), Some(patient_id.as_str())),
        other => panic!("referenced {other:?}"),
    }

    // The DELETE and the PUT took effect.
    assert_eq!(
        client.read::<Patient>(&doomed_id).await.expect("read"),
        None
    );
    let after: Patient = client
        .read(&changed_id)
        .await
        .expect("read")
        .expect("patient");
    assert_eq!(
        (family(&after), version_id(&after)),
        (Some("Zheng"), Some("2"))
    );
    s.stop().await;
}

#[tokio::test]
async fn failed_transaction_leaves_nothing_behind() {
    let s = common::TestServer::start().await;
    let client = client(&s);

    let mut p = patient("Huang", "Min", "MRN-0200");
    let id = p.create(&client).await.expect("create");

    // A create, then an update with a stale version: the whole transaction fails with 412.
    let mut tx = client.transaction();
    let mut fresh = patient("Lin", "Tao", "MRN-0201");
    fresh.id = Some("tx-should-not-exist".to_owned());
    tx.update(fresh, false).expect("create-on-update entry");
    tx.create(patient("Xu", "Qing", "MRN-0202"));
    let mut stale = p.clone();
    stale.meta.as_mut().unwrap().version_id = Some("7".to_owned());
    stale.name[0].as_mut().unwrap().family = Some("Never".to_owned());
    tx.update(stale, true).expect("update entry");
    let err = tx
        .send()
        .await
        .expect_err("transaction with a stale If-Match must fail");
    assert_eq!(
        outcome_status(&err),
        (StatusCode::PRECONDITION_FAILED, IssueSeverity::Error)
    );

    assert_eq!(
        client
            .read::<Patient>("tx-should-not-exist")
            .await
            .expect("read"),
        None
    );
    let read: Patient = client.read(&id).await.expect("read").expect("patient");
    assert_eq!(
        (family(&read), version_id(&read)),
        (Some("Huang"), Some("1"))
    );
    let all = client
        .history::<Patient>(None)
        .await
        .expect("type history")
        .into_inner();
    assert_eq!(
        all.entry.len(),
        1,
        "only the first create is in the type history"
    );
    s.stop().await;
}

#[tokio::test]
async fn batch_through_the_sdk_reports_each_entry() {
    let s = common::TestServer::start().await;
    let client = client(&s);

    let mut batch = client.batch();
    batch.create(patient("Gao", "Yan", "MRN-0300"));
    batch.read(ResourceType::Patient, "no-such-patient");
    let response = batch.send().await.expect("batch");
    assert_eq!(response.r#type, BundleType::BatchResponse);
    let statuses: Vec<u16> = response
        .entry
        .iter()
        .flatten()
        .map(|e| status_code(&e.response.as_ref().expect("response").status))
        .collect();
    assert_eq!(
        statuses,
        vec![201, 404],
        "batch entries succeed and fail independently"
    );
    let failed = response.entry[1]
        .as_ref()
        .unwrap()
        .response
        .as_ref()
        .unwrap();
    match failed.outcome.as_ref() {
        Some(Resource::OperationOutcome(oo)) => {
            assert_eq!(oo.issue[0].as_ref().unwrap().severity, IssueSeverity::Error)
        }
        other => panic!("404 entry outcome {other:?}"),
    }
    let location = response.entry[0]
        .as_ref()
        .unwrap()
        .response
        .as_ref()
        .unwrap()
        .location
        .clone()
        .expect("location");
    let (_, id, _) = location_parts(&location);
    let p: Patient = client
        .read(&id)
        .await
        .expect("read")
        .expect("batch-created patient");
    assert_eq!(family(&p), Some("Gao"));
    s.stop().await;
}
