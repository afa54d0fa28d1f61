//! A QuestionnaireResponse against its Questionnaire (R4), following the rules the HL7 Java
//! validator applies: linkIds exist at their nesting level and in order, answers have the type the
//! item asks for, non-repeating items have one answer, required items are answered (errors once
//! the response is `completed`/`amended`, warnings before), answers come from `answerOption` or
//! `answerValueSet`, and the constraining extensions (`minValue`, `maxValue`, `maxDecimalPlaces`,
//! `minLength`, `regex`, `maxSize`, `mimeType`, units, `referenceResource`, `optionExclusive`,
//! `questionnaire-maxOccurs`/`minOccurs`) hold. Answers to items that `enableWhen` disables are
//! errors.
//!
//! Plain JSON walking: the structural walk has already checked the shapes, so a value that is not
//! where or what we expect is simply not checked here (never a panic).

use super::Validator;
use crate::fhirpath::Quantity;
use crate::model::{Issue, Severity};
use crate::terminology::expand::ExpandOptions;
use crate::terminology::{CodeCheck, CodeRequest};
use rust_decimal::Decimal;
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::str::FromStr;

const EXT_MIN_VALUE: &str = "http://hl7.org/fhir/StructureDefinition/minValue";
const EXT_MAX_VALUE: &str = "http://hl7.org/fhir/StructureDefinition/maxValue";
const EXT_MAX_DECIMALS: &str = "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces";
const EXT_MIN_LENGTH: &str = "http://hl7.org/fhir/StructureDefinition/minLength";
const EXT_REGEX: &str = "http://hl7.org/fhir/StructureDefinition/regex";
const EXT_ENTRY_FORMAT: &str = "http://hl7.org/fhir/StructureDefinition/entryFormat";
const EXT_MAX_SIZE: &str = "http://hl7.org/fhir/StructureDefinition/maxSize";
const EXT_MIME_TYPE: &str = "http://hl7.org/fhir/StructureDefinition/mimeType";
const EXT_UNIT_OPTION: &str = "http://hl7.org/fhir/StructureDefinition/questionnaire-unitOption";
const EXT_UNIT_VALUE_SET: &str =
    "http://hl7.org/fhir/StructureDefinition/questionnaire-unitValueSet";
const EXT_REFERENCE_RESOURCE: &str =
    "http://hl7.org/fhir/StructureDefinition/questionnaire-referenceResource";
const EXT_OPTION_EXCLUSIVE: &str =
    "http://hl7.org/fhir/StructureDefinition/questionnaire-optionExclusive";
const EXT_MAX_OCCURS: &str = "http://hl7.org/fhir/StructureDefinition/questionnaire-maxOccurs";
const EXT_MIN_OCCURS: &str = "http://hl7.org/fhir/StructureDefinition/questionnaire-minOccurs";
const EXT_MIN_QUANTITY: &str =
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-minQuantity";
const EXT_MAX_QUANTITY: &str =
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-maxQuantity";
const UCUM: &str = "http://unitsofmeasure.org";

/// Checks a QuestionnaireResponse against the Questionnaire its `questionnaire` names.
pub(crate) fn check(val: &Validator, qr: &Value) -> Vec<Issue> {
    let mut issues = Vec::new();
    let Some(canonical) = qr.get("questionnaire").and_then(Value::as_str) else {
        // Nothing to check against; `questionnaire` is optional in R4.
        return issues;
    };
    let catalogue = val.registry.catalogue();
    let registered;
    let (q, contained_in_qr) = if let Some(id) = canonical.strip_prefix('#') {
        match contained(qr, "Questionnaire", id) {
            Some(q) => (q, true),
            None => {
                issues.push(warning(
                    "not-found",
                    format!(
                        "the contained Questionnaire '{canonical}' is not in QuestionnaireResponse.contained, so the answers were not checked against it"
                    ),
                    "QuestionnaireResponse.questionnaire",
                ));
                return issues;
            }
        }
    } else {
        match catalogue.resource("Questionnaire", canonical) {
            Some(q) => {
                registered = q.clone();
                (registered.as_ref(), false)
            }
            None => {
                // A canonical naming another kind of conformance resource is a plain mistake.
                if let Some(other) = crate::registry::CONFORMANCE_TYPES
                    .iter()
                    .find(|t| **t != "Questionnaire" && catalogue.resource(t, canonical).is_some())
                {
                    issues.push(error(
                        "invalid",
                        format!(
                            "QuestionnaireResponse.questionnaire '{canonical}' refers to a {other}, not a Questionnaire"
                        ),
                        "QuestionnaireResponse.questionnaire",
                    ));
                }
                issues.push(warning(
                    "not-found",
                    format!(
                        "the Questionnaire '{canonical}' is not known to this server, so the answers were not checked against it"
                    ),
                    "QuestionnaireResponse.questionnaire",
                ));
                return issues;
            }
        }
    };
    let status = qr.get("status").and_then(Value::as_str).unwrap_or("");
    let mut ctx = Ctx {
        val,
        q,
        vs_container: if contained_in_qr { Some(qr) } else { None },
        // Before completion, missing required answers are only warnings (the form is unfinished).
        not_completed: !matches!(status, "completed" | "amended"),
        answers_by_link: HashMap::new(),
        issues,
    };
    index_answers(qr, &mut ctx.answers_by_link);
    ctx.authored(qr);
    let q_items = items_of(q);
    ctx.items(q_items, qr, "QuestionnaireResponse", &[qr]);
    ctx.issues
}

fn error(code: &'static str, msg: String, at: &str) -> Issue {
    Issue {
        severity: Severity::Error,
        code,
        diagnostics: msg,
        expression: Some(at.to_string()),
    }
}

fn warning(code: &'static str, msg: String, at: &str) -> Issue {
    Issue {
        severity: Severity::Warning,
        code,
        diagnostics: msg,
        expression: Some(at.to_string()),
    }
}

fn information(code: &'static str, msg: String, at: &str) -> Issue {
    Issue {
        severity: Severity::Information,
        code,
        diagnostics: msg,
        expression: Some(at.to_string()),
    }
}

fn contained<'a>(container: &'a Value, ty: &str, id: &str) -> Option<&'a Value> {
    container.get("contained")?.as_array()?.iter().find(|r| {
        r.get("resourceType").and_then(Value::as_str) == Some(ty)
            && r.get("id").and_then(Value::as_str) == Some(id)
    })
}

fn items_of(v: &Value) -> &[Value] {
    v.get("item")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn answers_of(v: &Value) -> &[Value] {
    v.get("answer")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The values of the item's extensions with `url`, each as `(type suffix, value)`.
fn extensions<'a>(v: &'a Value, url: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
    v.get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |e| str_of(e, "url") == Some(url))
        .filter_map(choice_value)
}

fn extension<'a>(v: &'a Value, url: &'a str) -> Option<(&'a str, &'a Value)> {
    extensions(v, url).next()
}

/// The `value[x]` of an element (or `answer[x]` of an enableWhen) as `(type suffix, value)`.
fn choice_value(v: &Value) -> Option<(&str, &Value)> {
    choice_with(v, "value")
}

fn choice_with<'a>(v: &'a Value, prefix: &str) -> Option<(&'a str, &'a Value)> {
    v.as_object()?.iter().find_map(|(k, val)| {
        let suffix = k.strip_prefix(prefix)?;
        suffix
            .starts_with(|c: char| c.is_ascii_uppercase())
            .then_some((suffix, val))
    })
}

fn integer_extension(v: &Value, url: &str) -> Option<i64> {
    let (_, n) = extension(v, url)?;
    decimal_of(n)?.trunc().to_string().parse().ok()
}

fn decimal_of(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => {
            let text = n.to_string();
            Decimal::from_str(&text)
                .or_else(|_| Decimal::from_scientific(&text))
                .ok()
        }
        _ => None,
    }
}

/// Every answer in the response by the linkId of its item, for enableWhen questions that are
/// answered outside the item's own group.
fn index_answers<'a>(node: &'a Value, out: &mut HashMap<&'a str, Vec<&'a Value>>) {
    for item in items_of(node) {
        if let Some(link) = str_of(item, "linkId") {
            out.entry(link).or_default().extend(answers_of(item));
        }
        index_answers(item, out);
        for a in answers_of(item) {
            index_answers(a, out);
        }
    }
}

fn collect_answers<'a>(node: &'a Value, link: &str, out: &mut Vec<&'a Value>) {
    for item in items_of(node) {
        if str_of(item, "linkId") == Some(link) {
            out.extend(answers_of(item));
        }
        collect_answers(item, link, out);
        for a in answers_of(item) {
            collect_answers(a, link, out);
        }
    }
}

fn find_item<'q>(items: &'q [Value], link: &str) -> Option<&'q Value> {
    items.iter().find_map(|i| {
        if str_of(i, "linkId") == Some(link) {
            Some(i)
        } else {
            find_item(items_of(i), link)
        }
    })
}

struct Ctx<'a> {
    val: &'a Validator,
    q: &'a Value,
    /// Where `#id` value sets are looked up besides the Questionnaire: the response, when the
    /// Questionnaire itself is contained in it.
    vs_container: Option<&'a Value>,
    not_completed: bool,
    answers_by_link: HashMap<&'a str, Vec<&'a Value>>,
    issues: Vec<Issue>,
}

impl<'a> Ctx<'a> {
    fn error(&mut self, code: &'static str, msg: String, at: &str) {
        self.issues.push(error(code, msg, at));
    }

    fn warning(&mut self, code: &'static str, msg: String, at: &str) {
        self.issues.push(warning(code, msg, at));
    }

    /// A response authored outside the Questionnaire's effectivePeriod is suspicious, not
    /// invalid (warnings, as in Java).
    fn authored(&mut self, qr: &Value) {
        let (Some(authored), Some(period)) =
            (str_of(qr, "authored"), self.q.get("effectivePeriod"))
        else {
            return;
        };
        let at = instant_key(authored);
        if let Some(start) = str_of(period, "start")
            && at < instant_key(start)
        {
            self.warning(
                "business-rule",
                format!("the response was authored ({authored}) before the Questionnaire's effectivePeriod starts ({start})"),
                "QuestionnaireResponse.authored",
            );
        }
        // The end is inclusive at its own precision: an end of `2023-06` covers all of June.
        if let Some(end) = str_of(period, "end")
            && let Some(n) = end.find(['Z', '+']).or(Some(end.len()))
            && at.get(..n) > instant_key(end).get(..n)
        {
            self.warning(
                "business-rule",
                format!("the response was authored ({authored}) after the Questionnaire's effectivePeriod ends ({end})"),
                "QuestionnaireResponse.authored",
            );
        }
    }

    /// The response items under `parent` (the response, an item or an answer) against the
    /// Questionnaire items `q_items` of the same level. `anc` is the chain of response nodes from
    /// the root to `parent`, for enableWhen.
    fn items(&mut self, q_items: &'a [Value], parent: &'a Value, path: &str, anc: &[&'a Value]) {
        let mut by_q: Vec<Vec<(usize, &'a Value)>> = vec![Vec::new(); q_items.len()];
        let mut last = 0usize;
        for (i, item) in items_of(parent).iter().enumerate() {
            let ipath = format!("{path}.item[{i}]");
            // A missing linkId is a cardinality error the structural walk reports.
            let Some(link) = str_of(item, "linkId") else {
                continue;
            };
            match q_items
                .iter()
                .position(|q| str_of(q, "linkId") == Some(link))
            {
                Some(idx) => {
                    if idx < last {
                        self.error(
                            "structure",
                            format!(
                                "item '{link}' is out of order: response items follow the order of the Questionnaire"
                            ),
                            &ipath,
                        );
                    }
                    last = last.max(idx);
                    by_q[idx].push((i, item));
                }
                None => match find_item(items_of(self.q), link) {
                    Some(q_item) => {
                        self.error(
                            "structure",
                            format!(
                                "item '{link}' is in the wrong place: the Questionnaire defines it at another nesting level"
                            ),
                            &ipath,
                        );
                        let mut chain = anc.to_vec();
                        chain.push(item);
                        let enabled = self.enabled(q_item, anc);
                        self.item(q_item, item, &ipath, enabled, &chain);
                    }
                    None => self.error(
                        "not-found",
                        format!("linkId '{link}' is not found in the Questionnaire"),
                        &ipath,
                    ),
                },
            }
        }
        for (q_item, found) in q_items.iter().zip(by_q) {
            let link = str_of(q_item, "linkId").unwrap_or("");
            let enabled = self.enabled(q_item, anc);
            if found.is_empty() {
                if enabled && q_item.get("required").and_then(Value::as_bool) == Some(true) {
                    let msg = format!("no response found for required item '{link}'");
                    if self.not_completed {
                        self.warning("required", msg, path);
                    } else {
                        self.error("required", msg, path);
                    }
                }
                continue;
            }
            if found.len() > 1 && q_item.get("repeats").and_then(Value::as_bool) != Some(true) {
                self.error(
                    "structure",
                    format!(
                        "item '{link}' does not repeat, but the response has {} items for it",
                        found.len()
                    ),
                    &format!("{path}.item[{}]", found[1].0),
                );
            }
            for (i, item) in found {
                let ipath = format!("{path}.item[{i}]");
                if !enabled && (item.get("answer").is_some() || item.get("item").is_some()) {
                    self.error(
                        "invalid",
                        format!(
                            "item '{link}' has answers although its enableWhen conditions disable it"
                        ),
                        &ipath,
                    );
                }
                let mut chain = anc.to_vec();
                chain.push(item);
                self.item(q_item, item, &ipath, enabled, &chain);
            }
        }
    }

    /// One response item against its Questionnaire item.
    fn item(
        &mut self,
        q_item: &'a Value,
        item: &'a Value,
        path: &str,
        enabled: bool,
        anc: &[&'a Value],
    ) {
        let link = str_of(q_item, "linkId").unwrap_or("");
        if let Some(text) = str_of(item, "text")
            && str_of(q_item, "text").is_some_and(|t| t != text)
        {
            self.error(
                "invalid",
                format!("the text of item '{link}' differs from the Questionnaire's text"),
                path,
            );
        }
        let Some(ty) = str_of(q_item, "type") else {
            self.error(
                "required",
                format!(
                    "Questionnaire item '{link}' has no type, so its answers cannot be checked"
                ),
                path,
            );
            return;
        };
        // The abstract `question` type takes no answers, like a group.
        let is_group = matches!(ty, "group" | "question");
        let answers = answers_of(item);
        let required = q_item.get("required").and_then(Value::as_bool) == Some(true);
        if required && answers.is_empty() && !is_group && ty != "display" {
            let msg = format!("no answer found for required item '{link}'");
            if self.not_completed {
                self.warning("required", msg, path);
            } else if enabled {
                self.error("required", msg, path);
            }
        }
        let repeats = q_item.get("repeats").and_then(Value::as_bool) == Some(true);
        if answers.len() > 1 && !repeats && !is_group && ty != "display" {
            self.error(
                "structure",
                format!(
                    "item '{link}' does not repeat, so only one answer is allowed ({} found)",
                    answers.len()
                ),
                &format!("{path}.answer[1]"),
            );
        }
        if let Some(max) = integer_extension(q_item, EXT_MAX_OCCURS)
            && (answers.len() as i64) > max
        {
            self.error(
                "invalid",
                format!(
                    "item '{link}' allows at most {max} answers (questionnaire-maxOccurs) but has {}",
                    answers.len()
                ),
                path,
            );
        }
        if let Some(min) = integer_extension(q_item, EXT_MIN_OCCURS)
            && !answers.is_empty()
            && (answers.len() as i64) < min
        {
            self.error(
                "invalid",
                format!(
                    "item '{link}' needs at least {min} answers (questionnaire-minOccurs) but has {}",
                    answers.len()
                ),
                path,
            );
        }
        for (j, answer) in answers.iter().enumerate() {
            let apath = format!("{path}.answer[{j}]");
            match ty {
                "group" | "question" => {
                    self.error(
                        "structure",
                        format!(
                            "item '{link}' is of type {ty}, and items of type {ty} take no answers"
                        ),
                        &apath,
                    );
                    continue;
                }
                "display" => {
                    self.error(
                        "structure",
                        format!(
                            "item '{link}' is of type display, and display items take no answers"
                        ),
                        &apath,
                    );
                    continue;
                }
                _ => self.answer(q_item, ty, answer, &apath, answers.len()),
            }
            let mut chain = anc.to_vec();
            chain.push(answer);
            self.items(items_of(q_item), answer, &apath, &chain);
        }
        let has_children = item.get("item").is_some();
        if ty == "display" {
            if has_children {
                self.error(
                    "structure",
                    format!(
                        "item '{link}' is of type display, and display items have no sub-items"
                    ),
                    path,
                );
            }
        } else if !is_group {
            if has_children {
                self.error(
                    "structure",
                    format!(
                        "item '{link}' is of type {ty}: its sub-items belong inside its answers, not directly in the item"
                    ),
                    path,
                );
            }
        } else {
            if required && !has_children {
                self.error(
                    "required",
                    format!("required group '{link}' has no sub-items"),
                    path,
                );
            }
            self.items(items_of(q_item), item, path, anc);
        }
    }

    /// One answer of an item that takes answers.
    fn answer(
        &mut self,
        q_item: &'a Value,
        ty: &str,
        answer: &'a Value,
        apath: &str,
        count: usize,
    ) {
        let Some((vty, value)) = choice_value(answer) else {
            // An answer without a value (only nested items) has nothing to type-check.
            return;
        };
        let vpath = format!("{apath}.value{vty}");
        let allowed: &[&str] = match ty {
            "boolean" => &["Boolean"],
            "decimal" => &["Decimal"],
            "integer" => &["Integer"],
            "date" => &["Date"],
            "dateTime" => &["DateTime"],
            "time" => &["Time"],
            "string" | "text" => &["String"],
            "url" => &["Uri"],
            "attachment" => &["Attachment"],
            "reference" => &["Reference"],
            "quantity" => &["Quantity"],
            // R4 choice items may be answered by any of the answerOption types.
            "choice" | "open-choice" => &["Coding", "Date", "Time", "Integer", "String"],
            // An unknown item type is the Questionnaire's problem (its binding reports it).
            _ => return,
        };
        if !allowed.contains(&vty) {
            let names: Vec<String> = allowed.iter().map(|a| format!("value{a}")).collect();
            self.error(
                "structure",
                format!(
                    "the answer to item '{}' (type {ty}) must be {}, not value{vty}",
                    str_of(q_item, "linkId").unwrap_or(""),
                    names.join(" or ")
                ),
                &vpath,
            );
            return;
        }
        let open = ty == "open-choice";
        match (ty, vty) {
            ("decimal", _) => self.decimal(q_item, value, &vpath),
            ("integer", _) => {
                self.min_max(q_item, value, &vpath);
                self.primitive_option(q_item, "Integer", value, &vpath, false);
            }
            ("date" | "dateTime" | "time", _) => {
                self.min_max(q_item, value, &vpath);
                // The answerOption of R4 has no dateTime: date items and dateTime items both
                // list dates.
                let opt = if vty == "Time" { "Time" } else { "Date" };
                self.primitive_option(q_item, opt, value, &vpath, false);
            }
            ("string" | "text", _) => {
                self.string(q_item, ty, value, &vpath);
                self.string_option(q_item, value, &vpath, false);
            }
            ("attachment", _) => self.attachment(q_item, value, &vpath),
            ("reference", _) => self.reference(q_item, value, &vpath),
            ("quantity", _) => self.quantity(q_item, value, &vpath),
            (_, "Coding") => self.coding(q_item, value, &vpath, open, count),
            (_, "String") => self.string_option(q_item, value, &vpath, open),
            (_, other) => self.primitive_option(q_item, other, value, &vpath, open),
        }
    }

    /// minValue / maxValue for integers, dates, dateTimes and times.
    fn min_max(&mut self, q_item: &Value, value: &Value, vpath: &str) {
        for (url, is_min) in [(EXT_MIN_VALUE, true), (EXT_MAX_VALUE, false)] {
            let Some((_, bound)) = extension(q_item, url) else {
                continue;
            };
            let Some(ord) = compare_bound(value, bound) else {
                continue;
            };
            let bad = if is_min {
                ord == Ordering::Less
            } else {
                ord == Ordering::Greater
            };
            if bad {
                self.error(
                    "value",
                    format!(
                        "the value {} is {} the allowed {} of {} ({})",
                        text_of(value),
                        if is_min { "less than" } else { "greater than" },
                        if is_min { "minimum" } else { "maximum" },
                        text_of(bound),
                        if is_min { "minValue" } else { "maxValue" },
                    ),
                    vpath,
                );
            }
        }
    }

    fn decimal(&mut self, q_item: &Value, value: &Value, vpath: &str) {
        self.min_max(q_item, value, vpath);
        self.max_decimals(q_item, &text_of(value), vpath);
    }

    fn max_decimals(&mut self, q_item: &Value, text: &str, vpath: &str) {
        if let Some(max) = integer_extension(q_item, EXT_MAX_DECIMALS) {
            let mantissa = text.split(['e', 'E']).next().unwrap_or("");
            let places = mantissa.split_once('.').map_or(0, |(_, f)| f.len());
            if places as i64 > max {
                self.error(
                    "value",
                    format!(
                        "the value {text} has {places} decimal places, more than the {max} allowed (maxDecimalPlaces)"
                    ),
                    vpath,
                );
            }
        }
    }

    /// minLength, maxLength, regex; a line break in a `string` answer is a warning (that is what
    /// `text` items are for).
    fn string(&mut self, q_item: &Value, ty: &str, value: &Value, vpath: &str) {
        let Some(s) = value.as_str() else {
            return;
        };
        let len = s.chars().count();
        if let Some(min) = integer_extension(q_item, EXT_MIN_LENGTH)
            && (len as i64) < min
        {
            self.error(
                "value",
                format!("the answer '{s}' is shorter than the minimum length of {min} (minLength)"),
                vpath,
            );
        }
        if let Some(max) = q_item.get("maxLength").and_then(Value::as_i64)
            && (len as i64) > max
        {
            self.error(
                "value",
                format!("the answer '{s}' is longer than the maximum length of {max} (maxLength)"),
                vpath,
            );
        }
        if let Some((_, Value::String(pattern))) = extension(q_item, EXT_REGEX) {
            // The extension's regex must match the whole answer, as in XML Schema and Java.
            match regex::Regex::new(&format!("^(?:{pattern})$")) {
                Ok(re) if !re.is_match(s) => {
                    let format = extension(q_item, EXT_ENTRY_FORMAT)
                        .and_then(|(_, v)| v.as_str())
                        .map(|f| format!(" (expected format '{f}')"))
                        .unwrap_or_default();
                    self.error(
                        "value",
                        format!("the answer '{s}' does not match the regex '{pattern}'{format}"),
                        vpath,
                    );
                }
                Ok(_) => {}
                Err(_) => self.warning(
                    "not-supported",
                    format!("the Questionnaire's regex '{pattern}' cannot be compiled, so the answer was not checked against it"),
                    vpath,
                ),
            }
        }
        if ty == "string" && (s.contains('\n') || s.contains('\r')) {
            self.warning(
                "value",
                "a string answer should not contain line breaks (use a text item)".into(),
                vpath,
            );
        }
        if let Some(vs) = str_of(q_item, "answerValueSet") {
            match self.check_code(vs, None, s, None) {
                None => self.warning(
                    "not-found",
                    format!(
                        "value set '{vs}' is not known, so the answer was not checked against it"
                    ),
                    vpath,
                ),
                Some(CodeCheck::Invalid(m)) => self.error(
                    "code-invalid",
                    format!("the answer '{s}' is not in the answerValueSet '{vs}': {m}"),
                    vpath,
                ),
                Some(CodeCheck::NotAvailable(m)) => self.issues.push(information(
                    "informational",
                    format!("the answer '{s}' could not be checked against '{vs}': {m}"),
                    vpath,
                )),
                Some(CodeCheck::Valid) => {}
            }
        }
    }

    fn attachment(&mut self, q_item: &Value, value: &Value, vpath: &str) {
        let allowed: Vec<&str> = extensions(q_item, EXT_MIME_TYPE)
            .filter_map(|(_, v)| v.as_str())
            .collect();
        if !allowed.is_empty() {
            match str_of(value, "contentType") {
                None => self.error(
                    "required",
                    "the attachment has no contentType, but the Questionnaire restricts the mime types".into(),
                    vpath,
                ),
                // A listed type also admits its parameterised forms (`text/plain; charset=...`).
                Some(ct) if !allowed.iter().any(|a| ct.starts_with(a)) => self.error(
                    "value",
                    format!(
                        "the mime type {ct} is not allowed for this answer (allowed: {})",
                        allowed.join(", ")
                    ),
                    vpath,
                ),
                Some(_) => {}
            }
        }
        if let Some((_, max)) = extension(q_item, EXT_MAX_SIZE)
            && let Some(max) = decimal_of(max)
            && let Some(data) = str_of(value, "data")
        {
            let size = base64_len(data);
            if Decimal::from(size) > max {
                self.error(
                    "value",
                    format!("the attachment is too large ({size} bytes, maxSize {max})"),
                    vpath,
                );
            }
        }
    }

    fn reference(&mut self, q_item: &Value, value: &Value, vpath: &str) {
        let Some(reference) = str_of(value, "reference") else {
            return;
        };
        if reference.starts_with('#') || reference.starts_with("urn:") {
            // Contained and urn references carry no type in their text.
            return;
        }
        let ty = reference_type(reference);
        let allowed: Vec<&str> = extensions(q_item, EXT_REFERENCE_RESOURCE)
            .filter_map(|(_, v)| v.as_str())
            .collect();
        if !allowed.is_empty() {
            match ty {
                Some(t) if !allowed.contains(&t) => self.error(
                    "value",
                    format!(
                        "the resource type '{t}' in the reference {reference} is not allowed (allowed: {})",
                        allowed.join(", ")
                    ),
                    vpath,
                ),
                Some(_) => {}
                None => self.error(
                    "value",
                    format!(
                        "the resource type of the reference {reference} cannot be determined, but the Questionnaire restricts it (questionnaire-referenceResource)"
                    ),
                    vpath,
                ),
            }
        } else if let Some(t) = ty
            && t.starts_with(|c: char| c.is_ascii_uppercase())
            && !self.val.defs.is_resource_type(t)
        {
            // Only a capitalised segment claims to be a resource type: other URLs are not REST.
            self.error(
                "value",
                format!("'{t}' in the reference {reference} is not a resource type"),
                vpath,
            );
        }
    }

    fn quantity(&mut self, q_item: &Value, value: &Value, vpath: &str) {
        let shown = show_quantity(value);
        for (url, is_min) in [(EXT_MIN_QUANTITY, true), (EXT_MAX_QUANTITY, false)] {
            let Some((_, bound)) = extension(q_item, url) else {
                continue;
            };
            let which = if is_min { "minimum" } else { "maximum" };
            let bshown = show_quantity(bound);
            let formal = |v: &Value| str_of(v, "system").is_some() && str_of(v, "code").is_some();
            if !formal(value) || !formal(bound) {
                self.error(
                    "value",
                    format!(
                        "the quantity {shown} cannot be compared to the allowed {which} of {bshown}: both need a system and a code"
                    ),
                    vpath,
                );
                continue;
            }
            let ord = if str_of(value, "system") == str_of(bound, "system")
                && str_of(value, "code") == str_of(bound, "code")
            {
                decimal_of(value.get("value").unwrap_or(&Value::Null))
                    .zip(decimal_of(bound.get("value").unwrap_or(&Value::Null)))
                    .map(|(a, b)| a.cmp(&b))
            } else if str_of(value, "system") == Some(UCUM) && str_of(bound, "system") == Some(UCUM)
            {
                ucum_quantity(value)
                    .zip(ucum_quantity(bound))
                    .and_then(|(a, b)| a.compare(&b))
            } else {
                None
            };
            match ord {
                None => self.error(
                    "value",
                    format!(
                        "the quantity {shown} cannot be compared to the allowed {which} of {bshown}"
                    ),
                    vpath,
                ),
                Some(o)
                    if (is_min && o == Ordering::Less) || (!is_min && o == Ordering::Greater) =>
                {
                    self.error(
                        "value",
                        format!(
                            "the quantity {shown} is {} the allowed {which} of {bshown}",
                            if is_min { "less than" } else { "greater than" }
                        ),
                        vpath,
                    )
                }
                Some(_) => {}
            }
        }
        if let Some(v) = value.get("value") {
            self.max_decimals(q_item, &text_of(v), vpath);
        }
        let options: Vec<&Value> = extensions(q_item, EXT_UNIT_OPTION)
            .map(|(_, v)| v)
            .collect();
        if !options.is_empty() {
            let matches = |c: &Value| {
                str_of(c, "system").is_none_or(|s| str_of(value, "system") == Some(s))
                    && str_of(c, "code").is_none_or(|s| str_of(value, "code") == Some(s))
                    && str_of(c, "display").is_none_or(|s| str_of(value, "unit") == Some(s))
            };
            if !options.iter().any(|c| matches(c)) {
                let listed: Vec<String> = options.iter().map(|c| show_coding(c)).collect();
                self.error(
                    "value",
                    format!(
                        "the unit of {shown} is not one of the allowed units (questionnaire-unitOption: {})",
                        listed.join(", ")
                    ),
                    vpath,
                );
            }
        }
        if let Some((_, Value::String(vs))) = extension(q_item, EXT_UNIT_VALUE_SET) {
            let verdict = match str_of(value, "code") {
                Some(code) => self.check_code(vs, str_of(value, "system"), code, None),
                None => Some(CodeCheck::Invalid("the quantity has no unit code".into())),
            };
            match verdict {
                None => self.warning(
                    "not-found",
                    format!("unit value set '{vs}' is not known, so the unit was not checked"),
                    vpath,
                ),
                Some(CodeCheck::Invalid(m)) => self.error(
                    "code-invalid",
                    format!("the unit of {shown} is not in the unit value set '{vs}' (questionnaire-unitValueSet): {m}"),
                    vpath,
                ),
                Some(CodeCheck::NotAvailable(m)) => self.issues.push(information(
                    "informational",
                    format!("the unit of {shown} could not be checked against '{vs}': {m}"),
                    vpath,
                )),
                Some(CodeCheck::Valid) => {}
            }
        }
    }

    /// A Coding answer: against answerOption when there is one, else against answerValueSet.
    fn coding(&mut self, q_item: &Value, value: &Value, vpath: &str, open: bool, count: usize) {
        let options: Vec<&Value> = q_item
            .get("answerOption")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let (system, code) = (str_of(value, "system"), str_of(value, "code"));
        if !options.is_empty() {
            let codings: Vec<&Value> = options
                .iter()
                .copied()
                .filter(|o| o.get("valueCoding").is_some())
                .collect();
            if codings.is_empty() {
                if !open {
                    self.error(
                        "value",
                        "the answer is a Coding, but the answerOption list has no Coding options"
                            .into(),
                        vpath,
                    );
                }
                return;
            }
            let hit = codings.iter().find(|o| {
                let c = &o["valueCoding"];
                str_of(c, "system") == system && str_of(c, "code") == code
            });
            match hit {
                None => self.error(
                    "value",
                    format!(
                        "the code {}#{} is not one of the item's answerOptions",
                        system.unwrap_or(""),
                        code.unwrap_or("")
                    ),
                    vpath,
                ),
                Some(o)
                    if count > 1
                        && extension(o, EXT_OPTION_EXCLUSIVE)
                            .is_some_and(|(_, v)| v.as_bool() == Some(true)) =>
                {
                    self.error(
                        "value",
                        format!(
                            "the answer {}#{} is an exclusive option (questionnaire-optionExclusive), so no other answer may be selected with it",
                            system.unwrap_or(""),
                            code.unwrap_or("")
                        ),
                        vpath,
                    )
                }
                Some(_) => {}
            }
            return;
        }
        let Some(vs) = str_of(q_item, "answerValueSet") else {
            return;
        };
        let Some(code) = code else {
            // An open-choice answer may be text only; a Coding without a code cannot be checked.
            return;
        };
        match self.check_code(vs, system, code, str_of(value, "display")) {
            None => self.warning(
                "not-found",
                format!("value set '{vs}' is not known, so the answer was not checked against it"),
                vpath,
            ),
            Some(CodeCheck::Invalid(m)) => self.error(
                "code-invalid",
                format!(
                    "the code {}#{code} is not in the answerValueSet '{vs}': {m}",
                    system.unwrap_or("")
                ),
                vpath,
            ),
            Some(CodeCheck::NotAvailable(m)) => self.issues.push(information(
                "informational",
                format!(
                    "the code {}#{code} could not be checked against '{vs}': {m}",
                    system.unwrap_or("")
                ),
                vpath,
            )),
            Some(CodeCheck::Valid) => {}
        }
    }

    /// A string answer against the answerOption strings. For open-choice items any text is
    /// allowed, but text that spells one of the Coding options is probably a mistake (warning).
    fn string_option(&mut self, q_item: &Value, value: &Value, vpath: &str, open: bool) {
        let Some(s) = value.as_str() else {
            return;
        };
        let Some(options) = q_item.get("answerOption").and_then(Value::as_array) else {
            return;
        };
        if options.is_empty() {
            return;
        }
        if open {
            let spelled = options
                .iter()
                .filter_map(|o| o.get("valueCoding"))
                .any(|c| {
                    str_of(c, "display").is_some_and(|d| d.eq_ignore_ascii_case(s))
                        || str_of(c, "code").is_some_and(|d| d.eq_ignore_ascii_case(s))
                });
            if spelled {
                self.warning(
                    "value",
                    format!("the text '{s}' matches one of the Coding options; the Coding should probably be used"),
                    vpath,
                );
            }
            return;
        }
        self.primitive_option(q_item, "String", value, vpath, false);
    }

    /// A primitive answer (integer, date, time, string) against the answerOption values of its
    /// type.
    fn primitive_option(
        &mut self,
        q_item: &Value,
        ty: &str,
        value: &Value,
        vpath: &str,
        open: bool,
    ) {
        let Some(options) = q_item.get("answerOption").and_then(Value::as_array) else {
            return;
        };
        if options.is_empty() {
            return;
        }
        let key = format!("value{ty}");
        let typed: Vec<&Value> = options.iter().filter_map(|o| o.get(&key)).collect();
        if typed.is_empty() && !open {
            self.error(
                "value",
                format!("the answer is a {ty}, but the answerOption list has no {key} options"),
                vpath,
            );
            return;
        }
        if !typed.iter().any(|o| same_primitive(o, value)) {
            self.error(
                "value",
                format!(
                    "the {} {} is not one of the item's answerOptions",
                    ty.to_ascii_lowercase(),
                    text_of(value)
                ),
                vpath,
            );
        }
    }

    /// The verdict on a code against a value set the Questionnaire names (`#id` for a contained
    /// one); `None` when the value set is not found.
    fn check_code(
        &self,
        vs: &str,
        system: Option<&str>,
        code: &str,
        display: Option<&str>,
    ) -> Option<CodeCheck> {
        let term = self.val.terminology();
        let catalogue = self.val.registry.catalogue();
        let (resource, verdict) = if let Some(id) = vs.strip_prefix('#') {
            let resource = contained(self.q, "ValueSet", id)
                .or_else(|| self.vs_container.and_then(|c| contained(c, "ValueSet", id)))?;
            let scope = term.scope();
            let request = CodeRequest {
                system,
                version: None,
                code,
                display,
                infer_system: false,
            };
            let verdict = match term.expand_resource(&scope, resource, &ExpandOptions::default()) {
                Ok(exp) => term.check_in(&scope, &exp, vs, &request).check,
                Err(e) => {
                    CodeCheck::NotAvailable(format!("value set {vs} cannot be expanded: {e}"))
                }
            };
            (Some(resource), verdict)
        } else {
            let resource = catalogue.resource("ValueSet", vs).map(|r| r.as_ref());
            if resource.is_none() && !vs.ends_with("?fhir_vs") {
                return None;
            }
            (resource, term.validate_code(vs, system, code, display))
        };
        // A value set that cannot be expanded here (it needs SNOMED CT, ISO 3166...) still
        // cannot hold a code of a system none of its includes names.
        if let (CodeCheck::NotAvailable(_), Some(system), Some(resource)) =
            (&verdict, system, resource)
            && excludes_system(resource, system)
        {
            return Some(CodeCheck::Invalid(format!(
                "value set {vs} includes no codes from {system}"
            )));
        }
        Some(verdict)
    }

    /// Whether an item is enabled by its `enableWhen` conditions (`enableBehavior` all by default).
    /// Answers to a condition's question are looked up first in the innermost enclosing response
    /// node that has any, as for repeating groups, then in the whole response.
    fn enabled(&self, q_item: &Value, anc: &[&'a Value]) -> bool {
        let Some(conds) = q_item.get("enableWhen").and_then(Value::as_array) else {
            return true;
        };
        if conds.is_empty() {
            return true;
        }
        let mut results = conds.iter().map(|c| self.condition(c, anc));
        if str_of(q_item, "enableBehavior") == Some("any") {
            results.any(|r| r)
        } else {
            results.all(|r| r)
        }
    }

    fn condition(&self, cond: &Value, anc: &[&'a Value]) -> bool {
        let Some(question) = str_of(cond, "question") else {
            return true;
        };
        let mut answers = Vec::new();
        // Below the root: the nearest enclosing item or answer that holds answers to the
        // question (a repeating group answers for itself). The root: the precomputed index.
        for node in anc.iter().skip(1).rev() {
            collect_answers(node, question, &mut answers);
            if !answers.is_empty() {
                break;
            }
        }
        if answers.is_empty()
            && let Some(all) = self.answers_by_link.get(question)
        {
            answers.extend(all.iter().copied());
        }
        let Some((ety, expected)) = choice_with(cond, "answer") else {
            return true;
        };
        let op = str_of(cond, "operator").unwrap_or("=");
        if op == "exists" {
            return expected.as_bool() == Some(!answers.is_empty());
        }
        let values = answers.iter().filter_map(|a| choice_value(a));
        let orders: Vec<Option<Ordering>> = values
            .filter(|(vty, _)| *vty == ety)
            .map(|(_, v)| compare_answer(ety, v, expected))
            .collect();
        match op {
            "=" => orders.contains(&Some(Ordering::Equal)),
            // R4: true when no answer equals the enableWhen answer.
            "!=" => !orders.contains(&Some(Ordering::Equal)),
            ">" => orders.contains(&Some(Ordering::Greater)),
            "<" => orders.contains(&Some(Ordering::Less)),
            ">=" => orders
                .iter()
                .any(|o| matches!(o, Some(Ordering::Greater | Ordering::Equal))),
            "<=" => orders
                .iter()
                .any(|o| matches!(o, Some(Ordering::Less | Ordering::Equal))),
            _ => true,
        }
    }
}

/// True when every `compose.include` of a value set names a system (no imported value sets) and
/// none is `system`: no code of `system` can be a member.
fn excludes_system(vs: &Value, system: &str) -> bool {
    let Some(includes) = vs.pointer("/compose/include").and_then(Value::as_array) else {
        return false;
    };
    !includes.is_empty()
        && includes.iter().all(|inc| {
            inc.get("valueSet").is_none() && str_of(inc, "system").is_some_and(|s| s != system)
        })
}

/// Orders an answer value against an enableWhen answer of the same type.
fn compare_answer(ty: &str, v: &Value, expected: &Value) -> Option<Ordering> {
    match ty {
        "Coding" => {
            let same = str_of(v, "system") == str_of(expected, "system")
                && str_of(v, "code") == str_of(expected, "code");
            Some(if same {
                Ordering::Equal
            } else {
                Ordering::Less
            })
        }
        "Reference" => Some(if str_of(v, "reference") == str_of(expected, "reference") {
            Ordering::Equal
        } else {
            Ordering::Less
        }),
        "Quantity" => ucum_or_plain(v)?.compare(&ucum_or_plain(expected)?),
        "Boolean" => Some(if v == expected {
            Ordering::Equal
        } else {
            Ordering::Less
        }),
        _ => compare_bound(v, expected),
    }
}

/// A value against a minValue/maxValue bound: numbers as decimals, dates and times by the earliest
/// instant each denotes (`2022-06` is 2022-06-01), so partial dates compare as Java's do.
fn compare_bound(v: &Value, bound: &Value) -> Option<Ordering> {
    match (v, bound) {
        (Value::Number(_), Value::Number(_)) => Some(decimal_of(v)?.cmp(&decimal_of(bound)?)),
        (Value::String(a), Value::String(b)) => {
            if a.contains(':') && !a.contains('-') && !b.contains('-') {
                // Times: fixed width, the text orders like the value.
                Some(a.cmp(b))
            } else {
                Some(instant_key(a).cmp(&instant_key(b)))
            }
        }
        _ => None,
    }
}

/// `YYYY[-MM[-DD[Thh:mm:ss[.f]]]]` padded to a full local date-time (the zone is ignored: bounds
/// are dates in practice).
fn instant_key(s: &str) -> String {
    let (date, time) = s.split_once('T').unwrap_or((s, ""));
    let mut parts = date.splitn(3, '-');
    let year = parts.next().unwrap_or("0000");
    let month = parts.next().unwrap_or("01");
    let day = parts.next().unwrap_or("01");
    let time = time
        .split(['Z', '+', '-'])
        .next()
        .filter(|t| !t.is_empty())
        .unwrap_or("00:00:00");
    format!("{year:0>4}-{month}-{day}T{time}")
}

fn same_primitive(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => decimal_of(a) == decimal_of(b),
        _ => a == b,
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ucum_quantity(v: &Value) -> Option<Quantity> {
    Some(Quantity {
        value: decimal_of(v.get("value")?)?,
        unit: str_of(v, "code")?.to_string(),
    })
}

/// A quantity for enableWhen comparison: its UCUM code, else its unit text.
fn ucum_or_plain(v: &Value) -> Option<Quantity> {
    Some(Quantity {
        value: decimal_of(v.get("value")?)?,
        unit: str_of(v, "code")
            .or_else(|| str_of(v, "unit"))
            .unwrap_or("1")
            .to_string(),
    })
}

fn show_quantity(v: &Value) -> String {
    let mut s = String::new();
    if let Some(c) = str_of(v, "comparator") {
        s.push_str(c);
    }
    s.push_str(&v.get("value").map(text_of).unwrap_or_default());
    if let Some(u) = str_of(v, "unit") {
        s.push(' ');
        s.push_str(u);
    }
    if str_of(v, "system").is_some() || str_of(v, "code").is_some() {
        s.push_str(&format!(
            " ({}#{})",
            str_of(v, "system").unwrap_or(""),
            str_of(v, "code").unwrap_or("")
        ));
    }
    s
}

fn show_coding(c: &Value) -> String {
    format!(
        "{}#{}",
        str_of(c, "system").unwrap_or(""),
        str_of(c, "code").unwrap_or("")
    )
}

/// The resource type a literal reference names: the segment before the id (after dropping
/// `/_history/{vid}`), for relative and absolute references alike.
fn reference_type(reference: &str) -> Option<&str> {
    let path = reference.split(['?', '#']).next().unwrap_or(reference);
    let path = match path.find("/_history/") {
        Some(i) => &path[..i],
        None => path,
    };
    let mut segs = path.rsplit('/');
    let _id = segs.next()?;
    segs.next().filter(|t| !t.is_empty() && !t.contains(':'))
}

/// The number of bytes base64 `data` decodes to (whitespace ignored), without decoding it.
fn base64_len(data: &str) -> usize {
    let chars = data.bytes().filter(|b| !b.is_ascii_whitespace()).count();
    let pad = data
        .bytes()
        .rev()
        .filter(|b| !b.is_ascii_whitespace())
        .take_while(|b| *b == b'=')
        .count();
    (chars * 3 / 4).saturating_sub(pad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions::Definitions;
    use crate::registry::Registry;
    use crate::terminology::Terminology;
    use serde_json::json;
    use std::sync::Arc;

    const URL: &str = "http://example.org/Questionnaire/test";

    fn validator(q_items: Value) -> Validator {
        let registry = Registry::with_core(Definitions::core());
        registry
            .add(
                json!({"resourceType": "Questionnaire", "url": URL, "status": "active",
                    "item": q_items}),
                "test",
            )
            .expect("questionnaire registers");
        let registry = Arc::new(registry);
        Validator::new(registry.clone(), Arc::new(Terminology::new(registry)))
    }

    /// The issues of a response with `status` and `items` against a Questionnaire of `q_items`.
    fn run(q_items: Value, status: &str, items: Value) -> Vec<Issue> {
        let qr = json!({"resourceType": "QuestionnaireResponse", "questionnaire": URL,
            "status": status, "item": items});
        check(&validator(q_items), &qr)
    }

    fn errors(issues: &[Issue]) -> Vec<String> {
        issues
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| {
                format!(
                    "{} @ {}",
                    i.diagnostics,
                    i.expression.as_deref().unwrap_or("")
                )
            })
            .collect()
    }

    /// One item of `ty` (plus `extra` properties) answered by `answers`: the errors.
    fn one(ty: &str, extra: Value, answers: Value) -> Vec<String> {
        let mut q = json!({"linkId": "a", "type": ty, "repeats": true});
        if let (Some(q), Some(e)) = (q.as_object_mut(), extra.as_object()) {
            q.extend(e.clone());
        }
        errors(&run(
            json!([q]),
            "completed",
            json!([{"linkId": "a", "answer": answers}]),
        ))
    }

    fn ext(url: &str, key: &str, v: Value) -> Value {
        json!({"extension": [{"url": url, key: v}]})
    }

    #[test]
    fn unknown_questionnaire_is_a_warning_only() {
        let v = validator(json!([]));
        let qr = json!({"resourceType": "QuestionnaireResponse", "status": "completed",
            "questionnaire": "http://example.org/unknown"});
        let issues = check(&v, &qr);
        assert!(errors(&issues).is_empty());
        assert!(
            issues
                .iter()
                .any(|i| i.severity == Severity::Warning && i.diagnostics.contains("not checked"))
        );
        // Through the validator, as `$validate` and writes run it.
        let report = v.validate(&qr, &[], false);
        assert!(!report.has_errors(), "{:?}", report.issues);
        assert!(
            report
                .issues
                .iter()
                .any(|i| i.diagnostics.contains("not checked"))
        );
    }

    #[test]
    fn contained_questionnaire_is_used() {
        let v = validator(json!([]));
        let qr = json!({"resourceType": "QuestionnaireResponse", "status": "completed",
            "questionnaire": "#q",
            "contained": [{"resourceType": "Questionnaire", "id": "q", "status": "active",
                "item": [{"linkId": "a", "type": "string"}]}],
            "item": [{"linkId": "b", "answer": [{"valueString": "x"}]}]});
        let e = errors(&check(&v, &qr));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("'b' is not found") && e[0].ends_with("QuestionnaireResponse.item[0]")
        );
    }

    #[test]
    fn link_ids_exist_at_their_level() {
        let q =
            json!([{"linkId": "g", "type": "group", "item": [{"linkId": "a", "type": "string"}]}]);
        let good =
            json!([{"linkId": "g", "item": [{"linkId": "a", "answer": [{"valueString": "x"}]}]}]);
        assert!(errors(&run(q.clone(), "completed", good)).is_empty());
        let unknown = json!([{"linkId": "zz"}]);
        assert_eq!(errors(&run(q.clone(), "completed", unknown)).len(), 1);
        let misplaced = json!([{"linkId": "a", "answer": [{"valueString": "x"}]}]);
        let e = errors(&run(q, "completed", misplaced));
        assert!(e.len() == 1 && e[0].contains("wrong place"), "{e:?}");
    }

    #[test]
    fn items_follow_the_questionnaire_order() {
        let q = json!([{"linkId": "a", "type": "string"}, {"linkId": "b", "type": "string"}]);
        let ordered = json!([{"linkId": "a", "answer": [{"valueString": "x"}]},
            {"linkId": "b", "answer": [{"valueString": "y"}]}]);
        assert!(errors(&run(q.clone(), "completed", ordered)).is_empty());
        let swapped = json!([{"linkId": "b", "answer": [{"valueString": "y"}]},
            {"linkId": "a", "answer": [{"valueString": "x"}]}]);
        assert_eq!(errors(&run(q, "completed", swapped)).len(), 1);
    }

    #[test]
    fn groups_displays_and_questions_take_no_answers() {
        for ty in ["group", "display", "question"] {
            let q = json!([{"linkId": "a", "type": ty}]);
            assert!(errors(&run(q.clone(), "completed", json!([{"linkId": "a"}]))).is_empty());
            let answered = json!([{"linkId": "a", "answer": [{"valueString": "x"}]}]);
            let e = errors(&run(q, "completed", answered));
            assert!(
                e.len() == 1 && e[0].contains("take no answers"),
                "{ty}: {e:?}"
            );
        }
    }

    #[test]
    fn required_items_are_answered_once_completed() {
        let q = json!([{"linkId": "a", "type": "string", "required": true}]);
        assert!(
            errors(&run(
                q.clone(),
                "completed",
                json!([{"linkId": "a", "answer": [{"valueString": "x"}]}])
            ))
            .is_empty()
        );
        let e = errors(&run(q.clone(), "completed", json!([])));
        assert!(e.len() == 1 && e[0].contains("required item 'a'"), "{e:?}");
        assert_eq!(
            errors(&run(q.clone(), "completed", json!([{"linkId": "a"}]))).len(),
            1
        );
        // Unfinished: a warning, not an error.
        let issues = run(q, "in-progress", json!([]));
        assert!(errors(&issues).is_empty());
        assert!(issues.iter().any(|i| i.severity == Severity::Warning));
        // A required group needs sub-items.
        let g = json!([{"linkId": "g", "type": "group", "required": true,
            "item": [{"linkId": "a", "type": "string"}]}]);
        assert_eq!(
            errors(&run(g.clone(), "completed", json!([{"linkId": "g"}]))).len(),
            1
        );
        assert!(
            errors(&run(
                g,
                "completed",
                json!([{"linkId": "g",
            "item": [{"linkId": "a", "answer": [{"valueString": "x"}]}]}])
            ))
            .is_empty()
        );
    }

    #[test]
    fn non_repeating_items_have_one_answer_and_one_item() {
        let q = json!([{"linkId": "a", "type": "string"}]);
        let two = json!([{"valueString": "x"}, {"valueString": "y"}]);
        let e = errors(&run(
            q.clone(),
            "in-progress",
            json!([{"linkId": "a", "answer": two}]),
        ));
        assert!(e.len() == 1 && e[0].ends_with(".answer[1]"), "{e:?}");
        let twice = json!([{"linkId": "a", "answer": [{"valueString": "x"}]},
            {"linkId": "a", "answer": [{"valueString": "y"}]}]);
        assert_eq!(errors(&run(q, "completed", twice.clone())).len(), 1);
        let r = json!([{"linkId": "a", "type": "string", "repeats": true}]);
        assert!(errors(&run(r.clone(), "completed", twice)).is_empty());
        assert!(
            errors(&run(
                r,
                "completed",
                json!([{"linkId": "a", "answer": two}])
            ))
            .is_empty()
        );
    }

    #[test]
    fn max_occurs_extension() {
        let x = ext(EXT_MAX_OCCURS, "valueInteger", json!(2));
        assert!(
            one(
                "string",
                x.clone(),
                json!([{"valueString": "a"}, {"valueString": "b"}])
            )
            .is_empty()
        );
        let three = json!([{"valueString": "a"}, {"valueString": "b"}, {"valueString": "c"}]);
        assert_eq!(one("string", x, three).len(), 1);
    }

    #[test]
    fn answer_types_match_item_types() {
        let cases = [
            ("boolean", json!({"valueBoolean": true})),
            ("decimal", json!({"valueDecimal": 1.5})),
            ("integer", json!({"valueInteger": 1})),
            ("date", json!({"valueDate": "2020-01-01"})),
            ("dateTime", json!({"valueDateTime": "2020-01-01T10:00:00Z"})),
            ("time", json!({"valueTime": "10:00:00"})),
            ("string", json!({"valueString": "x"})),
            ("text", json!({"valueString": "x"})),
            ("url", json!({"valueUri": "http://x.org"})),
            (
                "attachment",
                json!({"valueAttachment": {"contentType": "text/plain"}}),
            ),
            (
                "reference",
                json!({"valueReference": {"reference": "Patient/1"}}),
            ),
            ("quantity", json!({"valueQuantity": {"value": 1}})),
            (
                "choice",
                json!({"valueCoding": {"system": "http://x.org", "code": "a"}}),
            ),
            ("choice", json!({"valueString": "x"})),
            ("open-choice", json!({"valueString": "x"})),
        ];
        for (ty, answer) in cases {
            assert!(one(ty, json!({}), json!([answer])).is_empty(), "{ty}");
            let wrong = json!({"valueCoding": {"system": "http://x.org", "code": "a"}});
            if !ty.contains("choice") {
                let e = one(ty, json!({}), json!([wrong]));
                assert!(
                    e.len() == 1 && e[0].ends_with(".answer[0].valueCoding"),
                    "{ty}: {e:?}"
                );
            }
        }
        assert_eq!(
            one("choice", json!({}), json!([{"valueBoolean": true}])).len(),
            1
        );
    }

    #[test]
    fn coding_answer_options_and_exclusive() {
        let opts = json!({"answerOption": [
            {"valueCoding": {"system": "http://x.org", "code": "a"}},
            {"valueCoding": {"system": "http://x.org", "code": "none"},
             "extension": [{"url": EXT_OPTION_EXCLUSIVE, "valueBoolean": true}]}]});
        let a = json!({"valueCoding": {"system": "http://x.org", "code": "a"}});
        let none = json!({"valueCoding": {"system": "http://x.org", "code": "none"}});
        let b = json!({"valueCoding": {"system": "http://x.org", "code": "b"}});
        assert!(one("choice", opts.clone(), json!([a.clone()])).is_empty());
        assert!(one("choice", opts.clone(), json!([none.clone()])).is_empty());
        assert_eq!(one("choice", opts.clone(), json!([b])).len(), 1);
        let e = one("choice", opts.clone(), json!([a, none]));
        assert!(e.len() == 1 && e[0].contains("exclusive"), "{e:?}");
        // Only Coding options: a string answer to a choice item cannot match.
        assert_eq!(
            one("choice", opts.clone(), json!([{"valueString": "a"}])).len(),
            1
        );
        // Open choice: free text is fine (a warning when it spells an option).
        let issues = run(
            json!([{"linkId": "q", "type": "open-choice", "answerOption": opts["answerOption"]}]),
            "completed",
            json!([{"linkId": "q", "answer": [{"valueString": "A"}]}]),
        );
        assert!(errors(&issues).is_empty());
        assert!(issues.iter().any(|i| i.severity == Severity::Warning));
    }

    #[test]
    fn primitive_answer_options() {
        let ints = json!({"answerOption": [{"valueInteger": 1}, {"valueInteger": 2}]});
        assert!(one("integer", ints.clone(), json!([{"valueInteger": 2}])).is_empty());
        assert_eq!(one("integer", ints, json!([{"valueInteger": 3}])).len(), 1);
        let strs = json!({"answerOption": [{"valueString": "x"}]});
        assert!(one("string", strs.clone(), json!([{"valueString": "x"}])).is_empty());
        assert_eq!(one("string", strs, json!([{"valueString": "y"}])).len(), 1);
        let dates = json!({"answerOption": [{"valueDate": "2020-01-01"}]});
        assert!(one("date", dates.clone(), json!([{"valueDate": "2020-01-01"}])).is_empty());
        assert_eq!(
            one("date", dates, json!([{"valueDate": "2020-01-02"}])).len(),
            1
        );
        let times = json!({"answerOption": [{"valueTime": "10:00:00"}]});
        assert!(one("time", times.clone(), json!([{"valueTime": "10:00:00"}])).is_empty());
        assert_eq!(
            one("time", times, json!([{"valueTime": "11:00:00"}])).len(),
            1
        );
        let refs = json!({"answerOption": [{"valueReference": {"reference": "Patient/1"}}]});
        let r = json!({"valueReference": {"reference": "Patient/2"}});
        assert!(
            one("reference", refs, json!([r])).is_empty(),
            "R4 checks no reference options"
        );
    }

    #[test]
    fn answer_value_set_membership() {
        let vs = json!({"answerValueSet": "http://hl7.org/fhir/ValueSet/administrative-gender"});
        let good = json!({"valueCoding": {"system": "http://hl7.org/fhir/administrative-gender",
            "code": "male"}});
        let bad = json!({"valueCoding": {"system": "http://hl7.org/fhir/administrative-gender",
            "code": "nope"}});
        assert!(one("choice", vs.clone(), json!([good])).is_empty());
        assert_eq!(one("choice", vs.clone(), json!([bad])).len(), 1);
        assert!(one("string", vs.clone(), json!([{"valueString": "female"}])).is_empty());
        assert_eq!(
            one("string", vs, json!([{"valueString": "Australia"}])).len(),
            1
        );
        // An unknown value set: a warning, not an error.
        let issues = run(
            json!([{"linkId": "a", "type": "choice", "answerValueSet": "http://x.org/vs"}]),
            "completed",
            json!([{"linkId": "a", "answer": [{"valueCoding": {"system": "http://x.org", "code": "a"}}]}]),
        );
        assert!(errors(&issues).is_empty());
        assert!(issues.iter().any(|i| i.severity == Severity::Warning));
    }

    #[test]
    fn string_lengths_and_regex() {
        let max = json!({"maxLength": 3});
        assert!(one("string", max.clone(), json!([{"valueString": "abc"}])).is_empty());
        assert_eq!(
            one("string", max, json!([{"valueString": "abcd"}])).len(),
            1
        );
        let min = ext(EXT_MIN_LENGTH, "valueInteger", json!(3));
        assert!(one("string", min.clone(), json!([{"valueString": "abc"}])).is_empty());
        assert_eq!(one("string", min, json!([{"valueString": "ab"}])).len(), 1);
        let re = ext(EXT_REGEX, "valueString", json!("[a-z]+@[a-z]+"));
        assert!(one("string", re.clone(), json!([{"valueString": "a@b"}])).is_empty());
        assert_eq!(one("string", re, json!([{"valueString": "a@b!"}])).len(), 1);
    }

    #[test]
    fn min_max_values_and_decimal_places() {
        let mut lim = ext(EXT_MIN_VALUE, "valueInteger", json!(2));
        lim["extension"]
            .as_array_mut()
            .unwrap()
            .push(json!({"url": EXT_MAX_VALUE, "valueInteger": 5}));
        assert!(
            one(
                "integer",
                lim.clone(),
                json!([{"valueInteger": 2}, {"valueInteger": 5}])
            )
            .is_empty()
        );
        assert_eq!(
            one(
                "integer",
                lim,
                json!([{"valueInteger": 1}, {"valueInteger": 6}])
            )
            .len(),
            2
        );
        let mut dates = ext(EXT_MIN_VALUE, "valueDate", json!("2020"));
        dates["extension"]
            .as_array_mut()
            .unwrap()
            .push(json!({"url": EXT_MAX_VALUE, "valueDate": "2022-06"}));
        let inside =
            json!([{"valueDate": "2020"}, {"valueDate": "2022-06"}, {"valueDate": "2021-03-04"}]);
        assert!(one("date", dates.clone(), inside).is_empty());
        let outside = json!([{"valueDate": "2019-12-31"}, {"valueDate": "2022-06-30"}, {"valueDate": "2022-07"}]);
        assert_eq!(one("date", dates, outside).len(), 3);
        let places = ext(EXT_MAX_DECIMALS, "valueInteger", json!(2));
        let ok: Value = serde_json::from_str(r#"[{"valueDecimal": 1.25}]"#).unwrap();
        let bad: Value = serde_json::from_str(r#"[{"valueDecimal": -5.12340}]"#).unwrap();
        assert!(one("decimal", places.clone(), ok).is_empty());
        assert_eq!(one("decimal", places, bad).len(), 1);
    }

    #[test]
    fn attachment_mime_type_and_size() {
        let mime = ext(EXT_MIME_TYPE, "valueCode", json!("image/gif"));
        let gif = json!({"valueAttachment": {"contentType": "image/gif"}});
        let pdf = json!({"valueAttachment": {"contentType": "application/pdf"}});
        assert!(one("attachment", mime.clone(), json!([gif])).is_empty());
        assert_eq!(one("attachment", mime.clone(), json!([pdf])).len(), 1);
        assert_eq!(
            one(
                "attachment",
                mime,
                json!([{"valueAttachment": {"title": "x"}}])
            )
            .len(),
            1
        );
        let size = ext(EXT_MAX_SIZE, "valueDecimal", json!(3));
        let small = json!({"valueAttachment": {"data": "YWJj"}});
        let big = json!({"valueAttachment": {"data": "YWJjZA=="}});
        assert!(one("attachment", size.clone(), json!([small])).is_empty());
        assert_eq!(one("attachment", size, json!([big])).len(), 1);
    }

    #[test]
    fn reference_resource_types() {
        let only = ext(EXT_REFERENCE_RESOURCE, "valueCode", json!("Patient"));
        let patient = json!({"valueReference": {"reference": "Patient/1"}});
        let org = json!({"valueReference": {"reference": "Organization/1"}});
        assert!(one("reference", only.clone(), json!([patient])).is_empty());
        assert_eq!(one("reference", only, json!([org])).len(), 1);
        let chicken = json!({"valueReference": {"reference": "https://example.org/Chicken/1"}});
        assert_eq!(one("reference", json!({}), json!([chicken])).len(), 1);
        let plain = json!({"valueReference": {"reference": "https://example.org/fhir/Patient/1"}});
        assert!(one("reference", json!({}), json!([plain])).is_empty());
    }

    #[test]
    fn quantity_units_and_bounds() {
        let unit = ext(
            EXT_UNIT_OPTION,
            "valueCoding",
            json!({"system": UCUM, "code": "km"}),
        );
        let km = json!({"valueQuantity": {"value": 10, "system": UCUM, "code": "km"}});
        let kg = json!({"valueQuantity": {"value": 10, "system": UCUM, "code": "kg"}});
        assert!(one("quantity", unit.clone(), json!([km.clone()])).is_empty());
        assert_eq!(one("quantity", unit, json!([kg.clone()])).len(), 1);
        let mut bounds = ext(
            EXT_MIN_QUANTITY,
            "valueQuantity",
            json!({"value": 5, "system": UCUM, "code": "km"}),
        );
        bounds["extension"]
            .as_array_mut()
            .unwrap()
            .push(json!({"url": EXT_MAX_QUANTITY,
            "valueQuantity": {"value": 50, "system": UCUM, "code": "km"}}));
        let m = json!({"valueQuantity": {"value": 10000, "system": UCUM, "code": "m"}});
        let far = json!({"valueQuantity": {"value": 60000, "system": UCUM, "code": "m"}});
        assert!(one("quantity", bounds.clone(), json!([km, m])).is_empty());
        assert_eq!(one("quantity", bounds.clone(), json!([far])).len(), 1);
        // Incompatible units: both bounds fail to compare.
        assert_eq!(one("quantity", bounds, json!([kg])).len(), 2);
        let vs = ext(
            EXT_UNIT_VALUE_SET,
            "valueCanonical",
            json!("http://hl7.org/fhir/ValueSet/administrative-gender"),
        );
        let q = json!({"valueQuantity": {"value": 1, "system": UCUM, "code": "km"}});
        assert_eq!(one("quantity", vs, json!([q])).len(), 1);
    }

    #[test]
    fn enable_when_disables_items() {
        let q = json!([
            {"linkId": "n0", "type": "integer"},
            {"linkId": "n1", "type": "integer"},
            {"linkId": "n2", "type": "integer", "required": true, "enableBehavior": "all",
             "enableWhen": [{"question": "n0", "operator": "=", "answerInteger": 1},
                            {"question": "n1", "operator": "=", "answerInteger": 1}]}
        ]);
        let answer = |v: i64| json!([{"valueInteger": v}]);
        // Disabled: the required item may be missing, but may not be answered.
        let disabled =
            json!([{"linkId": "n0", "answer": answer(1)}, {"linkId": "n1", "answer": answer(0)}]);
        assert!(errors(&run(q.clone(), "completed", disabled)).is_empty());
        let answered = json!([{"linkId": "n0", "answer": answer(1)}, {"linkId": "n1", "answer": answer(0)},
            {"linkId": "n2", "answer": answer(5)}]);
        let e = errors(&run(q.clone(), "completed", answered));
        assert!(e.len() == 1 && e[0].contains("enableWhen"), "{e:?}");
        // Enabled: required applies.
        let enabled =
            json!([{"linkId": "n0", "answer": answer(1)}, {"linkId": "n1", "answer": answer(1)}]);
        assert_eq!(errors(&run(q, "completed", enabled)).len(), 1);
    }

    #[test]
    fn value_sets_that_cannot_expand_still_exclude_foreign_systems() {
        let vs = json!({"resourceType": "ValueSet", "compose": {"include": [
            {"system": "http://snomed.info/sct", "filter": [
                {"property": "concept", "op": "is-a", "value": "123"}]}]}});
        assert!(excludes_system(&vs, UCUM));
        assert!(!excludes_system(&vs, "http://snomed.info/sct"));
        let imports = json!({"compose": {"include": [{"valueSet": ["http://x.org/vs"]}]}});
        assert!(!excludes_system(&imports, UCUM));
        assert!(!excludes_system(&json!({}), UCUM));
    }

    #[test]
    fn authored_outside_the_effective_period_is_a_warning() {
        let registry = Registry::with_core(Definitions::core());
        registry
            .add(
                json!({"resourceType": "Questionnaire", "url": URL, "status": "active",
                    "effectivePeriod": {"start": "2022", "end": "2023-06"}}),
                "test",
            )
            .expect("questionnaire registers");
        let registry = Arc::new(registry);
        let v = Validator::new(registry.clone(), Arc::new(Terminology::new(registry)));
        let qr = |authored: &str| {
            json!({"resourceType": "QuestionnaireResponse", "questionnaire": URL,
                "status": "completed", "authored": authored})
        };
        assert!(check(&v, &qr("2022-03-04")).is_empty());
        assert!(check(&v, &qr("2023-06-30T23:00:00Z")).is_empty());
        for outside in ["2021-12-12", "2023-07-01T10:00:00Z"] {
            let issues = check(&v, &qr(outside));
            assert!(errors(&issues).is_empty());
            assert_eq!(issues.len(), 1, "{outside}: {issues:?}");
            assert_eq!(issues[0].severity, Severity::Warning);
        }
    }

    #[test]
    fn answer_text_must_match() {
        let q = json!([{"linkId": "a", "type": "string", "text": "Name?"}]);
        let same = json!([{"linkId": "a", "text": "Name?", "answer": [{"valueString": "x"}]}]);
        assert!(errors(&run(q.clone(), "completed", same)).is_empty());
        let other = json!([{"linkId": "a", "text": "Age?", "answer": [{"valueString": "x"}]}]);
        assert_eq!(errors(&run(q, "completed", other)).len(), 1);
    }

    #[test]
    fn helpers_do_not_panic_on_odd_input() {
        assert_eq!(reference_type("Patient/1/_history/2"), Some("Patient"));
        assert_eq!(reference_type("1"), None);
        assert_eq!(reference_type(""), None);
        assert_eq!(base64_len(""), 0);
        assert_eq!(base64_len("=="), 0);
        assert_eq!(instant_key("2022-06"), "2022-06-01T00:00:00");
        assert_eq!(
            instant_key("2022-06-30T10:00:00+02:00"),
            "2022-06-30T10:00:00"
        );
        let v = validator(json!([{"linkId": "a"}]));
        let odd = json!({"resourceType": "QuestionnaireResponse", "questionnaire": URL,
            "item": [{"linkId": "a", "answer": [{"valueString": "x", "item": 5}]}, {"item": []}, 7]});
        let _ = check(&v, &odd);
    }
}
