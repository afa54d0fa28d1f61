//! The v2 datatype maps of the IG (CX[Identifier], XPN[HumanName], CWE[CodeableConcept],
//! DTM[dateTime], XCN[Practitioner]...), as code: they are fixed by the standard, while which field
//! goes where is data (`mappings/hl7v2/`).
//!
//! Every converter returns `Ok(None)` for an empty value and `Err(reason)` for a value it cannot
//! represent; the engine records such a value as unmapped with the reason, never drops it.

use super::ids::resource_id;
use super::load::Concept;
use crate::ingest::hl7v2::Piece;
use crate::ingest::hl7v2::er7::Parts;
use serde_json::{Map, Value, json};
use std::collections::HashMap;

/// How a v2 value becomes a FHIR value; chosen at load time from (v2 type, FHIR type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Converter {
    /// CX -> Identifier.
    Identifier,
    /// EI / EIP -> Identifier.
    EntityIdentifier,
    /// XPN -> HumanName.
    HumanName,
    /// XAD -> Address.
    Address,
    /// XTN -> ContactPoint.
    ContactPoint,
    /// CWE/CE/CNE/IS/ID -> CodeableConcept.
    CodeableConcept,
    /// CWE/CE/CNE/IS/ID -> Coding.
    Coding,
    /// CWE/IS/ID/ST -> a code (component 1, through the vocabulary when one is named).
    Code,
    /// DTM/DT/TS -> date, dateTime or instant.
    Date,
    DateTime,
    Instant,
    /// TM -> time.
    Time,
    /// ST/TX/FT/... -> string, markdown, uri, id.
    Text,
    /// NM/SI -> decimal.
    Decimal,
    /// NM/SI -> integer, positiveInt, unsignedInt.
    Integer,
    /// ID (Y/N) -> boolean.
    Boolean,
    /// XCN/CNN -> Reference(Practitioner), creating the Practitioner.
    Practitioner,
    /// PL -> Reference(Location), creating the Location.
    Location,
    /// XON/HD -> Reference(Organization), creating the Organization.
    Organization,
    /// CQ, or NM with units (`units = "RXE-5"`) -> Quantity.
    Quantity,
    /// MO (amount^currency) -> Money.
    Money,
    /// CP (price: an MO in component 1, its parts as sub-components) -> Money.
    Price,
    /// OBX-5: the type comes from OBX-2 (`type_from`), units from OBX-6.
    Varies,
    /// ST/TX/FT -> Attachment (plain text, base64).
    Attachment,
}

impl Converter {
    /// The converter for a v2 data type into a FHIR type, or why there is none.
    pub fn choose(v2: &str, fhir: &str) -> Result<Converter, String> {
        use Converter::*;
        let coded = matches!(v2, "CWE" | "CE" | "CNE" | "CF" | "IS" | "ID");
        let text_like = matches!(
            v2,
            "ST" | "TX" | "FT" | "ID" | "IS" | "SI" | "NM" | "TN" | "SNM" | "TM" | "DTM" | "DT"
        );
        let c = match (v2, fhir) {
            ("varies", _) => Varies,
            ("CX", "Identifier") => Identifier,
            ("EI" | "EIP", "Identifier") => EntityIdentifier,
            ("ST" | "ID" | "IS", "Identifier") => EntityIdentifier,
            ("XPN", "HumanName") => HumanName,
            ("XAD", "Address") => Address,
            ("XTN", "ContactPoint") => ContactPoint,
            (_, "CodeableConcept") if coded => CodeableConcept,
            (_, "Coding") if coded => Coding,
            (_, "code") if coded || v2 == "ST" => Code,
            ("DTM" | "DT" | "TS", "date") => Date,
            ("DTM" | "DT" | "TS", "dateTime") => DateTime,
            ("DTM" | "TS", "instant") => Instant,
            ("TM", "time") => Time,
            ("NM" | "SI", "decimal") => Decimal,
            ("NM" | "SI", "integer" | "positiveInt" | "unsignedInt") => Integer,
            ("ID" | "IS" | "ST", "boolean") => Boolean,
            ("XCN" | "CNN" | "NDL", "Reference") => Practitioner,
            ("PL", "Reference") => Location,
            ("XON" | "HD", "Reference") => Organization,
            ("CQ" | "NM", "Quantity") => Quantity,
            ("MO", "Money") => Money,
            ("CP", "Money") => Price,
            ("ST" | "TX" | "FT", "Attachment") => Attachment,
            (_, "string" | "markdown" | "uri" | "id") if text_like || coded => Text,
            (_, "string" | "markdown")
                if matches!(v2, "CWE" | "XCN" | "XON" | "HD" | "PL" | "CX" | "EI") =>
            {
                Text
            }
            _ => return Err(format!("no datatype map from {v2} to {fhir}")),
        };
        Ok(c)
    }

    /// True when the converter creates a resource of its own.
    pub fn creates_resource(self) -> bool {
        matches!(
            self,
            Converter::Practitioner | Converter::Location | Converter::Organization
        )
    }
}

/// What a conversion needs from its message.
pub struct Context<'a> {
    /// MSH-4 (sending facility) namespace: scopes local identifiers and derived ids.
    pub facility: &'a str,
    /// Offset for times without one (`+08:00`).
    pub default_offset: &'a str,
    pub vocabularies: &'a HashMap<String, HashMap<String, Concept>>,
    /// Local identifier systems per sending facility.
    pub identifier_systems: &'a super::identifiers::IdentifierSystems,
    /// Resources created by references (Practitioner, Location, Organization), by `Type/id`.
    pub created: Vec<(String, Value)>,
}

/// One converted value, or why it could not be.
pub type Converted = Result<Option<Value>, String>;

fn text(p: Piece<'_>) -> Result<String, String> {
    p.text()
        .map(|t| t.trim().to_string())
        .map_err(|e| e.to_string())
}

fn put(obj: &mut Map<String, Value>, key: &str, v: String) {
    if !v.is_empty() {
        obj.insert(key.to_string(), Value::String(v));
    }
}

fn push(arr: &mut Vec<Value>, v: String) {
    if !v.is_empty() {
        arr.push(Value::String(v));
    }
}

fn done(obj: Map<String, Value>) -> Option<Value> {
    (!obj.is_empty()).then_some(Value::Object(obj))
}

impl Context<'_> {
    /// Converts one repetition (or a component, when the rule names one).
    pub fn convert(&mut self, c: Converter, p: Piece<'_>, vocabulary: Option<&str>) -> Converted {
        if !p.is_valued() {
            return Ok(None);
        }
        match c {
            Converter::Identifier => self.identifier(p),
            Converter::EntityIdentifier => self.entity_identifier(p),
            Converter::HumanName => human_name(p),
            Converter::Address => address(p),
            Converter::ContactPoint => contact_point(p),
            Converter::CodeableConcept => self.codeable_concept(p, vocabulary),
            Converter::Coding => Ok(self.codings(&p.split(), vocabulary)?.into_iter().next()),
            Converter::Code => self.code(p, vocabulary),
            Converter::Date => date_time(&text(p.part(1))?, Precision::Date, self.default_offset),
            Converter::DateTime => {
                date_time(&text(p.part(1))?, Precision::DateTime, self.default_offset)
            }
            Converter::Instant => {
                date_time(&text(p.part(1))?, Precision::Instant, self.default_offset)
            }
            Converter::Time => time(&text(p.part(1))?),
            Converter::Text => {
                let t = p.text().map_err(|e| e.to_string())?;
                Ok((!t.trim().is_empty()).then(|| Value::String(t.trim().to_string())))
            }
            Converter::Decimal => decimal(&text(p.part(1))?).map(Some),
            Converter::Integer => {
                let t = text(p.part(1))?;
                t.parse::<i64>()
                    .map(|n| Some(json!(n)))
                    .map_err(|_| format!("'{t}' is not an integer"))
            }
            Converter::Boolean => match text(p.part(1))?.as_str() {
                "Y" | "y" => Ok(Some(Value::Bool(true))),
                "N" | "n" => Ok(Some(Value::Bool(false))),
                t => Err(format!("'{t}' is not Y or N")),
            },
            Converter::Practitioner => self.practitioner(p),
            Converter::Location => self.location(p),
            Converter::Organization => self.organization(p),
            Converter::Quantity => {
                let v = decimal(&text(p.part(1))?)?;
                let mut q = Map::new();
                q.insert("value".into(), v);
                self.units(&mut q, p.part(2))?;
                Ok(Some(Value::Object(q)))
            }
            Converter::Money => money(p),
            Converter::Price => money(p.part(1)),
            Converter::Varies => Err("OBX-5 needs its value type (type_from)".into()),
            Converter::Attachment => {
                let t = p.text().map_err(|e| e.to_string())?;
                Ok(Some(
                    json!({"contentType": "text/plain; charset=utf-8", "data": base64(t.as_bytes())}),
                ))
            }
        }
    }

    /// A system URI for a v2 coding-system name (HL7 table 0396), from the `CodingSystem`
    /// vocabulary; HL7 tables become `v2-nnnn`.
    pub fn system(&self, name: &str) -> Option<String> {
        if name.is_empty() {
            return None;
        }
        if let Some(c) = self
            .vocabularies
            .get("CodingSystem")
            .and_then(|v| v.get(name))
        {
            return Some(c.code.clone());
        }
        let digits = name
            .strip_prefix("HL7")
            .map(|d| d.trim_start_matches('-'))
            .filter(|d| d.len() == 4 && d.bytes().all(|b| b.is_ascii_digit()));
        if let Some(d) = digits {
            return Some(format!("http://terminology.hl7.org/CodeSystem/v2-{d}"));
        }
        Some(format!("urn:huitong:hl7v2:cs:{}", uri_safe(name)))
    }

    fn identifier(&mut self, p: Piece<'_>) -> Converted {
        let cs = p.split();
        let mut id = Map::new();
        put(&mut id, "value", text(cs.part(1))?);
        if !id.contains_key("value") {
            return Err("CX.1 (the identifier) is empty".into());
        }
        // CX.4 is an HD whose parts are sub-components.
        let hd = cs.part(4);
        let hd_parts = [hd.part(1), hd.part(2), hd.part(3)];
        let authority = SubHd(hd_parts);
        let ty = text(cs.part(5))?;
        if let Some(s) = self.authority_system_sub(&authority, &ty)? {
            id.insert("system".into(), Value::String(s));
        }
        if !ty.is_empty() {
            id.insert(
                "type".into(),
                json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": ty}]}),
            );
        }
        let start = text(cs.part(7))?;
        let end = text(cs.part(8))?;
        let mut period = Map::new();
        if let Some(Value::String(s)) = date_time(&start, Precision::DateTime, self.default_offset)
            .ok()
            .flatten()
        {
            period.insert("start".into(), Value::String(s));
        }
        if let Some(Value::String(s)) = date_time(&end, Precision::DateTime, self.default_offset)
            .ok()
            .flatten()
        {
            period.insert("end".into(), Value::String(s));
        }
        if !period.is_empty() {
            id.insert("period".into(), Value::Object(period));
        }
        Ok(Some(Value::Object(id)))
    }

    /// The system of an identifier from its assigning authority (an HD) and type (CX.5): a
    /// global one the authority names, else the site's table, else one scoped by facility.
    fn authority_system_sub(
        &self,
        hd: &SubHd<'_>,
        id_type: &str,
    ) -> Result<Option<String>, String> {
        let [a, b, c] = hd.0;
        let (ns, uid, kind) = (text(a)?, text(b)?, text(c)?);
        let is_oid = !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if kind == "ISO" && is_oid {
            return Ok(Some(format!("urn:oid:{uid}")));
        }
        if matches!(kind.as_str(), "UUID" | "GUID") && !uid.is_empty() {
            return Ok(Some(format!("urn:uuid:{}", uid.to_lowercase())));
        }
        let local = if ns.is_empty() { &uid } else { &ns };
        if let Some(s) = self
            .identifier_systems
            .system(self.facility, local, id_type)
        {
            return Ok(Some(s.to_string()));
        }
        Ok(if !ns.is_empty() {
            Some(format!(
                "urn:huitong:hl7v2:id:{}:{}",
                uri_safe(self.facility),
                uri_safe(&ns)
            ))
        } else if is_oid {
            Some(format!("urn:oid:{uid}"))
        } else if !uid.is_empty() {
            Some(format!(
                "urn:huitong:hl7v2:id:{}:{}",
                uri_safe(self.facility),
                uri_safe(&uid)
            ))
        } else {
            None
        })
    }

    fn entity_identifier(&mut self, p: Piece<'_>) -> Converted {
        let cs = p.split();
        let mut id = Map::new();
        put(&mut id, "value", text(cs.part(1))?);
        if !id.contains_key("value") {
            return Err("EI.1 (the identifier) is empty".into());
        }
        let hd = SubHd([cs.part(2), cs.part(3), cs.part(4)]);
        // EI.2-4 are components, not sub-components: read them as the HD they spell.
        if let Some(s) = self.authority_system_sub(&hd, "")? {
            id.insert("system".into(), Value::String(s));
        }
        Ok(Some(Value::Object(id)))
    }

    fn codings(&self, cs: &Parts<'_>, vocabulary: Option<&str>) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        for (code_at, display_at, system_at) in [(1, 2, 3), (4, 5, 6)] {
            let code = text(cs.part(code_at))?;
            if code.is_empty() {
                continue;
            }
            let display = text(cs.part(display_at))?;
            let system_name = text(cs.part(system_at))?;
            if code_at == 1
                && let Some(vocab) = vocabulary
            {
                let concept = self.lookup(vocab, &code)?;
                let mut c = Map::new();
                if let Some(s) = &concept.system {
                    c.insert("system".into(), Value::String(s.clone()));
                }
                c.insert("code".into(), Value::String(concept.code.clone()));
                put(
                    &mut c,
                    "display",
                    concept.display.clone().unwrap_or(display),
                );
                out.push(Value::Object(c));
                continue;
            }
            let mut c = Map::new();
            if let Some(s) = self.system(&system_name) {
                c.insert("system".into(), Value::String(s));
            }
            c.insert("code".into(), Value::String(code));
            put(&mut c, "display", display);
            out.push(Value::Object(c));
        }
        Ok(out)
    }

    fn lookup(&self, vocab: &str, code: &str) -> Result<&Concept, String> {
        self.vocabularies
            .get(vocab)
            .and_then(|v| v.get(code))
            .ok_or_else(|| format!("'{code}' is not in vocabulary {vocab}"))
    }

    fn codeable_concept(&self, p: Piece<'_>, vocabulary: Option<&str>) -> Converted {
        let cs = p.split();
        let codings = self.codings(&cs, vocabulary)?;
        let mut cc = Map::new();
        if !codings.is_empty() {
            cc.insert("coding".into(), Value::Array(codings));
        }
        let original = text(cs.part(9))?;
        let display = text(cs.part(2))?;
        if !original.is_empty() {
            put(&mut cc, "text", original);
        } else if !cc.contains_key("coding") {
            put(&mut cc, "text", display);
        }
        Ok(done(cc))
    }

    fn code(&self, p: Piece<'_>, vocabulary: Option<&str>) -> Converted {
        let code = text(p.part(1))?;
        if code.is_empty() {
            return Ok(None);
        }
        match vocabulary {
            Some(v) => Ok(Some(Value::String(self.lookup(v, &code)?.code.clone()))),
            None => Ok(Some(Value::String(code))),
        }
    }

    /// Sets `unit` (and `system`/`code`) of a Quantity from a CWE of units.
    pub fn units(&self, q: &mut Map<String, Value>, units: Piece<'_>) -> Result<(), String> {
        let cs = units.split();
        let code = text(cs.part(1))?;
        let display = text(cs.part(2))?;
        let system = text(cs.part(3))?;
        put(
            q,
            "unit",
            if display.is_empty() {
                code.clone()
            } else {
                display
            },
        );
        if !code.is_empty() {
            if system.eq_ignore_ascii_case("UCUM") || system.is_empty() {
                q.insert("system".into(), json!("http://unitsofmeasure.org"));
            } else if let Some(s) = self.system(&system) {
                q.insert("system".into(), Value::String(s));
            }
            q.insert("code".into(), Value::String(code));
        }
        Ok(())
    }

    /// OBX-5 by OBX-2: returns the JSON key suffix (`Quantity`, `String`...) and the value.
    pub fn varies(
        &mut self,
        value_type: &str,
        p: Piece<'_>,
        units: Option<Piece<'_>>,
    ) -> Result<Option<(&'static str, Value)>, String> {
        if !p.is_valued() {
            return Ok(None);
        }
        let with = |k: &'static str, v: Option<Value>| Ok(v.map(|v| (k, v)));
        match value_type {
            "NM" => {
                let mut q = Map::new();
                q.insert("value".into(), decimal(&text(p.part(1))?)?);
                if let Some(u) = units {
                    self.units(&mut q, u.part(1))?;
                }
                with("Quantity", Some(Value::Object(q)))
            }
            "ST" | "TX" | "FT" => {
                let t = p.text().map_err(|e| e.to_string())?;
                with("String", Some(Value::String(t.trim_end().to_string())))
            }
            "CWE" | "CE" | "CNE" | "CF" | "IS" => {
                with("CodeableConcept", self.codeable_concept(p, None)?)
            }
            "DTM" | "DT" | "TS" => with(
                "DateTime",
                date_time(&text(p.part(1))?, Precision::DateTime, self.default_offset)?,
            ),
            "TM" => with("Time", time(&text(p.part(1))?)?),
            "SN" => {
                let cs = p.split();
                let comparator = text(cs.part(1))?;
                let n1 = text(cs.part(2))?;
                let sep = text(cs.part(3))?;
                let n2 = text(cs.part(4))?;
                let unit = |ctx: &Self, v: Value| -> Result<Value, String> {
                    let mut q = Map::new();
                    q.insert("value".into(), v);
                    if let Some(u) = units {
                        ctx.units(&mut q, u.part(1))?;
                    }
                    Ok(Value::Object(q))
                };
                match sep.as_str() {
                    "" => {
                        let mut q = unit(self, decimal(&n1)?)?;
                        if matches!(comparator.as_str(), "<" | "<=" | ">" | ">=")
                            && let Value::Object(m) = &mut q
                        {
                            m.insert("comparator".into(), Value::String(comparator));
                        } else if !comparator.is_empty() && comparator != "=" {
                            return Err(format!(
                                "SN comparator '{comparator}' has no FHIR equivalent"
                            ));
                        }
                        with("Quantity", Some(q))
                    }
                    "-" => with(
                        "Range",
                        Some(
                            json!({"low": unit(self, decimal(&n1)?)?, "high": unit(self, decimal(&n2)?)?}),
                        ),
                    ),
                    ":" | "/" => with(
                        "Ratio",
                        Some(
                            json!({"numerator": {"value": decimal(&n1)?}, "denominator": {"value": decimal(&n2)?}}),
                        ),
                    ),
                    _ => Err(format!("SN separator '{sep}' is not understood")),
                }
            }
            "RP" => with("String", Some(Value::String(text(p.part(1))?))),
            other => Err(format!("OBX-2 value type '{other}' has no mapping")),
        }
    }

    fn practitioner(&mut self, p: Piece<'_>) -> Converted {
        let cs = p.split();
        let id_value = text(cs.part(1))?;
        let family = text(cs.part(2).part(1))?;
        let mut name = Map::new();
        put(&mut name, "family", family.clone());
        let mut given = Vec::new();
        push(&mut given, text(cs.part(3))?);
        push(&mut given, text(cs.part(4))?);
        if !given.is_empty() {
            name.insert("given".into(), Value::Array(given.clone()));
        }
        let mut suffix = Vec::new();
        push(&mut suffix, text(cs.part(5))?);
        push(&mut suffix, text(cs.part(7))?);
        if !suffix.is_empty() {
            name.insert("suffix".into(), Value::Array(suffix));
        }
        let mut prefix = Vec::new();
        push(&mut prefix, text(cs.part(6))?);
        if !prefix.is_empty() {
            name.insert("prefix".into(), Value::Array(prefix));
        }
        let mut r = Map::new();
        r.insert("resourceType".into(), json!("Practitioner"));
        let authority = SubHd([cs.part(9).part(1), cs.part(9).part(2), cs.part(9).part(3)]);
        // XCN.13: the identifier type (a 医师执业证号 under its own system, for one).
        let system = self.authority_system_sub(&authority, &text(cs.part(13))?)?;
        if !id_value.is_empty() {
            let mut ident = Map::new();
            if let Some(s) = &system {
                ident.insert("system".into(), Value::String(s.clone()));
            }
            ident.insert("value".into(), Value::String(id_value.clone()));
            r.insert("identifier".into(), json!([ident]));
        }
        if !name.is_empty() {
            r.insert("name".into(), json!([name]));
        }
        if r.len() == 1 {
            return Ok(None);
        }
        let key = if id_value.is_empty() {
            p.raw().to_string()
        } else {
            format!("{}|{id_value}", system.unwrap_or_default())
        };
        let display: Vec<String> = given
            .iter()
            .filter_map(|g| g.as_str().map(str::to_string))
            .chain((!family.is_empty()).then_some(family))
            .collect();
        Ok(Some(self.create(
            "Practitioner",
            &key,
            r,
            display.join(" "),
        )))
    }

    fn location(&mut self, p: Piece<'_>) -> Converted {
        let cs = p.split();
        let mut parts = Vec::new();
        for i in [4, 7, 8, 1, 2, 3] {
            let piece = if i == 4 {
                cs.part(4).part(1)
            } else {
                cs.part(i)
            };
            let t = text(piece)?;
            if !t.is_empty() {
                parts.push(t);
            }
        }
        let description = text(cs.part(9))?;
        let name = if description.is_empty() {
            parts.join(" ")
        } else {
            description
        };
        if name.is_empty() {
            return Ok(None);
        }
        let r = json!({"resourceType": "Location", "name": name, "mode": "instance"});
        let Value::Object(r) = r else { return Ok(None) };
        Ok(Some(self.create("Location", p.raw(), r, name)))
    }

    fn organization(&mut self, p: Piece<'_>) -> Converted {
        let cs = p.split();
        let name = text(cs.part(1))?;
        let mut r = Map::new();
        r.insert("resourceType".into(), json!("Organization"));
        put(&mut r, "name", name.clone());
        let oid = text(cs.part(2))?;
        if text(cs.part(3))? == "ISO" && !oid.is_empty() {
            r.insert(
                "identifier".into(),
                json!([{"system": "urn:ietf:rfc:3986", "value": format!("urn:oid:{oid}")}]),
            );
        }
        let org_id = text(cs.part(10))?;
        if !org_id.is_empty() {
            r.insert(
                "identifier".into(),
                json!([{"system": format!("urn:huitong:hl7v2:id:{}:org", uri_safe(self.facility)), "value": org_id}]),
            );
        }
        if r.len() == 1 {
            return Ok(None);
        }
        Ok(Some(self.create("Organization", p.raw(), r, name)))
    }

    fn create(&mut self, ty: &str, key: &str, mut r: Map<String, Value>, display: String) -> Value {
        let id = resource_id(ty, self.facility, key);
        r.insert("id".into(), Value::String(id.clone()));
        self.created.push((format!("{ty}/{id}"), Value::Object(r)));
        let mut reference = Map::new();
        reference.insert("reference".into(), Value::String(format!("{ty}/{id}")));
        put(&mut reference, "display", display);
        Value::Object(reference)
    }
}

/// An HD read from three pieces (sub-components inside CX.4, components in EI).
struct SubHd<'m>([Piece<'m>; 3]);

/// An MO: amount, then an ISO 4217 currency (absent: the amount alone).
fn money(mo: Piece<'_>) -> Converted {
    let cs = mo.split();
    let mut m = Map::new();
    m.insert("value".into(), decimal(&text(cs.part(1))?)?);
    let currency = text(cs.part(2))?;
    if !currency.is_empty() {
        if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(format!("'{currency}' is not an ISO 4217 currency code"));
        }
        m.insert("currency".into(), Value::String(currency));
    }
    Ok(Some(Value::Object(m)))
}

fn human_name(p: Piece<'_>) -> Converted {
    let cs = p.split();
    let mut n = Map::new();
    put(&mut n, "family", text(cs.part(1).part(1))?);
    let mut given = Vec::new();
    push(&mut given, text(cs.part(2))?);
    push(&mut given, text(cs.part(3))?);
    if !given.is_empty() {
        n.insert("given".into(), Value::Array(given));
    }
    let mut suffix = Vec::new();
    push(&mut suffix, text(cs.part(4))?);
    push(&mut suffix, text(cs.part(6))?);
    if !suffix.is_empty() {
        n.insert("suffix".into(), Value::Array(suffix));
    }
    let mut prefix = Vec::new();
    push(&mut prefix, text(cs.part(5))?);
    if !prefix.is_empty() {
        n.insert("prefix".into(), Value::Array(prefix));
    }
    let use_ = match text(cs.part(7))?.as_str() {
        "L" => "official",
        "D" => "usual",
        "M" | "B" => "maiden",
        "N" => "nickname",
        "S" | "A" => "anonymous",
        "T" | "I" => "temp",
        _ => "",
    };
    put(&mut n, "use", use_.to_string());
    Ok(done(n))
}

fn address(p: Piece<'_>) -> Converted {
    let cs = p.split();
    let mut a = Map::new();
    let mut line = Vec::new();
    push(&mut line, text(cs.part(1).part(1))?);
    push(&mut line, text(cs.part(2))?);
    if !line.is_empty() {
        a.insert("line".into(), Value::Array(line));
    }
    put(&mut a, "city", text(cs.part(3))?);
    put(&mut a, "state", text(cs.part(4))?);
    put(&mut a, "postalCode", text(cs.part(5))?);
    put(&mut a, "country", text(cs.part(6))?);
    match text(cs.part(7))?.as_str() {
        "H" => put(&mut a, "use", "home".into()),
        "B" | "O" => put(&mut a, "use", "work".into()),
        "C" => put(&mut a, "use", "temp".into()),
        "BA" => put(&mut a, "use", "old".into()),
        "M" => put(&mut a, "type", "postal".into()),
        "SH" => put(&mut a, "type", "physical".into()),
        _ => {}
    }
    put(&mut a, "district", text(cs.part(9))?);
    Ok(done(a))
}

fn contact_point(p: Piece<'_>) -> Converted {
    let cs = p.split();
    let mut c = Map::new();
    let equipment = text(cs.part(3))?;
    let system = match equipment.as_str() {
        "PH" | "CP" | "SAT" => "phone",
        "FX" => "fax",
        "Internet" | "X.400" => "email",
        "BP" => "pager",
        "" => "phone",
        _ => "other",
    };
    let value = if system == "email" {
        text(cs.part(4))?
    } else {
        let unformatted = text(cs.part(12))?;
        let local = text(cs.part(7))?;
        let legacy = text(cs.part(1))?;
        if !unformatted.is_empty() {
            unformatted
        } else if !local.is_empty() {
            let mut v = String::new();
            let cc = text(cs.part(5))?;
            let area = text(cs.part(6))?;
            if !cc.is_empty() {
                v.push_str(&format!("+{cc} "));
            }
            if !area.is_empty() {
                v.push_str(&format!("({area}) "));
            }
            v.push_str(&local);
            let ext = text(cs.part(8))?;
            if !ext.is_empty() {
                v.push_str(&format!(" ext. {ext}"));
            }
            v
        } else {
            legacy
        }
    };
    if value.is_empty() {
        return Err("XTN has no number or address".into());
    }
    c.insert("system".into(), Value::String(system.into()));
    c.insert("value".into(), Value::String(value));
    let use_ = match (text(cs.part(2))?.as_str(), equipment.as_str()) {
        (_, "CP") => "mobile",
        ("PRN" | "ORN" | "VHN", _) => "home",
        ("WPN", _) => "work",
        _ => "",
    };
    put(&mut c, "use", use_.into());
    Ok(Some(Value::Object(c)))
}

/// How much of a v2 timestamp a FHIR type needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Date,
    DateTime,
    Instant,
}

fn digits(
    s: &str,
    from: usize,
    len: usize,
    max: u32,
    what: &str,
) -> Result<Option<String>, String> {
    let Some(part) = s.get(from..from + len) else {
        return Ok(None);
    };
    match part.parse::<u32>() {
        Ok(n)
            if part.bytes().all(|b| b.is_ascii_digit())
                && n <= max
                && (what == "year"
                    || what.ends_with("hour")
                    || what.ends_with("minute")
                    || what.ends_with("second")
                    || n >= 1) =>
        {
            Ok(Some(part.to_string()))
        }
        _ => Err(format!("'{s}': {what} '{part}' is out of range")),
    }
}

/// DTM `YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]` to a FHIR date, dateTime or instant.
pub fn date_time(v: &str, want: Precision, default_offset: &str) -> Converted {
    if v.is_empty() {
        return Ok(None);
    }
    let (body, zone) = match v.find(['+', '-']) {
        Some(i) => (&v[..i], Some(&v[i..])),
        None => (v, None),
    };
    if let Some(z) = zone
        && (z.len() != 5 || !z[1..].bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("'{v}': bad time zone"));
    }
    let (main, fraction) = match body.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (body, None),
    };
    if !main.bytes().all(|b| b.is_ascii_digit()) || ![4, 6, 8, 10, 12, 14].contains(&main.len()) {
        return Err(format!("'{v}' is not an HL7 date/time"));
    }
    let year = digits(main, 0, 4, 9999, "year")?.unwrap_or_default();
    let month = digits(main, 4, 2, 12, "month")?;
    let day = digits(main, 6, 2, 31, "day")?;
    let hour = digits(main, 8, 2, 23, "hour")?;
    let minute = digits(main, 10, 2, 59, "minute")?;
    let second = digits(main, 12, 2, 60, "second")?;
    let mut date = year;
    if let Some(m) = &month {
        date.push('-');
        date.push_str(m);
        if let Some(d) = &day {
            date.push('-');
            date.push_str(d);
        }
    }
    let Some(hour) = hour.filter(|_| want != Precision::Date) else {
        if want == Precision::Instant {
            return Err(format!("'{v}' has no time, which an instant needs"));
        }
        return Ok(Some(Value::String(date)));
    };
    if day.is_none() {
        return Ok(Some(Value::String(date)));
    }
    let mut out = format!(
        "{date}T{hour}:{}:{}",
        minute.unwrap_or_else(|| "00".into()),
        second.unwrap_or_else(|| "00".into())
    );
    if let Some(f) = fraction {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) || f.len() > 9 {
            return Err(format!("'{v}': bad fraction of a second"));
        }
        out.push('.');
        out.push_str(f);
    }
    match zone {
        Some(z) => {
            let ok = z.len() == 5 && z[1..].bytes().all(|b| b.is_ascii_digit());
            let hh = z
                .get(1..3)
                .and_then(|h| h.parse::<u32>().ok())
                .unwrap_or(99);
            let mm = z
                .get(3..5)
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or(99);
            if !ok || hh > 14 || mm > 59 || (hh == 14 && mm > 0) {
                return Err(format!("'{v}': bad time zone"));
            }
            out.push_str(&format!("{}:{}", &z[..3], &z[3..]));
        }
        None => out.push_str(default_offset),
    }
    Ok(Some(Value::String(out)))
}

fn time(v: &str) -> Converted {
    let main = v.split(['+', '-']).next().unwrap_or("");
    let (hms, frac) = main.split_once('.').unwrap_or((main, ""));
    if !hms.bytes().all(|b| b.is_ascii_digit()) || ![2, 4, 6].contains(&hms.len()) {
        return Err(format!("'{v}' is not an HL7 time"));
    }
    let h = digits(hms, 0, 2, 23, "hour")?.unwrap_or_default();
    let m = digits(hms, 2, 2, 59, "minute")?.unwrap_or_else(|| "00".into());
    let s = digits(hms, 4, 2, 59, "second")?.unwrap_or_else(|| "00".into());
    let mut out = format!("{h}:{m}:{s}");
    if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) {
        out.push('.');
        out.push_str(frac);
    }
    Ok(Some(Value::String(out)))
}

/// An HL7 NM as a JSON number with its decimal text kept (`1.50` stays `1.50`).
pub fn decimal(v: &str) -> Result<Value, String> {
    let t = v.trim();
    let (sign, digits_part) = match t.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = digits_part.split_once('.').unwrap_or((digits_part, ""));
    let int_ok = int.bytes().all(|b| b.is_ascii_digit());
    let frac_ok = frac.bytes().all(|b| b.is_ascii_digit());
    if !int_ok || !frac_ok || (int.is_empty() && frac.is_empty()) {
        return Err(format!("'{v}' is not a number"));
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let text = if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    };
    serde_json::from_str::<Value>(&text).map_err(|_| format!("'{v}' is not a number"))
}

/// Standard base64 with padding (FHIR base64Binary).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encodes what cannot stand in a URI.
pub fn uri_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_to_fhir() {
        let dt = |v| {
            date_time(v, Precision::DateTime, "+08:00")
                .unwrap()
                .unwrap()
        };
        assert_eq!(dt("19800101"), json!("1980-01-01"));
        assert_eq!(dt("198001011230"), json!("1980-01-01T12:30:00+08:00"));
        assert_eq!(
            dt("20240102030405.123-0500"),
            json!("2024-01-02T03:04:05.123-05:00")
        );
        assert_eq!(
            date_time("198808181126+0215", Precision::Date, "Z")
                .unwrap()
                .unwrap(),
            json!("1988-08-18")
        );
        assert!(date_time("19801301", Precision::Date, "Z").is_err());
        assert!(date_time("1980-01-01", Precision::Date, "Z").is_err());
        assert!(date_time("19800101", Precision::Instant, "Z").is_err());
    }

    #[test]
    fn decimals_keep_their_text() {
        assert_eq!(decimal("1.50").unwrap().to_string(), "1.50");
        assert_eq!(decimal(".5").unwrap().to_string(), "0.5");
        assert_eq!(decimal("+007").unwrap().to_string(), "7");
        assert!(decimal("1,5").is_err());
        assert!(decimal("").is_err());
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(
            base64("张".as_bytes()),
            "5bygAA==".replace("AA==", "").to_string() + ""
        );
    }

    #[test]
    fn converters_are_chosen_by_types() {
        assert_eq!(
            Converter::choose("CX", "Identifier"),
            Ok(Converter::Identifier)
        );
        assert_eq!(Converter::choose("CWE", "code"), Ok(Converter::Code));
        assert!(Converter::choose("CX", "code").is_err());
        assert!(Converter::choose("XPN", "date").is_err());
    }
}
