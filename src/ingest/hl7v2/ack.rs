//! Acknowledgements: MSH + MSA + ERR, in original (AA/AE/AR) or enhanced (CA/CE/CR) mode, encoded
//! in the sender's charset.
//!
//! An ACK is a function of the message and the outcome (its own MSH-7 is the commit time and its
//! MSH-10 derives from the message's), so the ACK of a duplicate is the original ACK.

use super::Charset;
use super::er7::{Delimiters, Hl7v2Message, Location};
use super::escape::escape;

/// The acknowledgement code, before the mode decides its spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Committed.
    Accept,
    /// Refused for what the message says (mapping, validation, store): AE / CE.
    Error,
    /// Refused before processing (unparseable, unsupported type): AR / CR.
    Reject,
}

/// One ERR segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    pub location: Option<Location>,
    /// HL7 table 0357 code (100 segment sequence, 101 required field missing, 102 data type error,
    /// 103 table value not found, 200 unsupported message type, 207 application internal error).
    pub code: u16,
    /// E, W or I.
    pub severity: char,
    pub message: String,
}

fn code_text(code: u16) -> &'static str {
    match code {
        0 => "Message accepted",
        100 => "Segment sequence error",
        101 => "Required field missing",
        102 => "Data type error",
        103 => "Table value not found",
        200 => "Unsupported message type",
        201 => "Unsupported event code",
        203 => "Unsupported version id",
        205 => "Duplicate key identifier",
        206 => "Application record locked",
        _ => "Application internal error",
    }
}

/// The header fields an ACK echoes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    pub event: String,
    pub control_id: String,
    pub processing_id: String,
    pub version: String,
    /// MSH-15 and MSH-16: any value means enhanced mode.
    pub accept_ack_type: String,
    pub application_ack_type: String,
}

impl Header {
    /// Reads the header of a parsed message (raw field text, escapes kept, so they echo exactly).
    pub fn of(msg: &Hl7v2Message<'_>) -> Header {
        let msh = msg.msh();
        let raw = |n: usize| msh.field(n).raw().to_string();
        let (_, event, _) = msg.message_type();
        Header {
            sending_application: raw(3),
            sending_facility: raw(4),
            receiving_application: raw(5),
            receiving_facility: raw(6),
            event,
            control_id: raw(10),
            processing_id: raw(11),
            version: raw(12),
            accept_ack_type: raw(15),
            application_ack_type: raw(16),
        }
    }

    /// True when MSH-15 or MSH-16 asks for enhanced acknowledgement.
    pub fn enhanced(&self) -> bool {
        !self.accept_ack_type.is_empty() || !self.application_ack_type.is_empty()
    }

    /// Whether an accept acknowledgement is sent at all (MSH-15: AL, NE, ER, SU).
    pub fn wants_ack(&self, code: AckCode) -> bool {
        match self.accept_ack_type.as_str() {
            "NE" => false,
            "ER" => code != AckCode::Accept,
            "SU" => code == AckCode::Accept,
            _ => true,
        }
    }
}

/// Writes an ACK message as text (segments ended by CR).
pub fn render(
    h: &Header,
    d: &Delimiters,
    charset: Charset,
    code: AckCode,
    time: &str,
    errors: &[AckError],
) -> String {
    let f = d.field as char;
    let c = d.component as char;
    let mode = match (h.enhanced(), code) {
        (false, AckCode::Accept) => "AA",
        (false, AckCode::Error) => "AE",
        (false, AckCode::Reject) => "AR",
        (true, AckCode::Accept) => "CA",
        (true, AckCode::Error) => "CE",
        (true, AckCode::Reject) => "CR",
    };
    let version = if h.version.is_empty() {
        "2.5"
    } else {
        &h.version
    };
    let processing = if h.processing_id.is_empty() {
        "P"
    } else {
        &h.processing_id
    };
    let msh18 = if charset == Charset::Ascii {
        ""
    } else {
        charset.msh18()
    };
    let mut out = format!(
        "MSH{f}{enc}{f}{ra}{f}{rf}{f}{sa}{f}{sf}{f}{time}{f}{f}ACK{c}{ev}{c}ACK{f}ACK{ctl}{f}{processing}{f}{version}{f}{f}{f}{f}{f}{f}{msh18}\r",
        enc = d.encoding_characters(),
        ra = h.receiving_application,
        rf = h.receiving_facility,
        sa = h.sending_application,
        sf = h.sending_facility,
        ev = h.event,
        ctl = h.control_id,
    );
    let text = errors
        .first()
        .map(|e| escape(&e.message, d))
        .unwrap_or_default();
    out.push_str(&format!(
        "MSA{f}{mode}{f}{}{f}{}\r",
        h.control_id,
        truncate(&text, 80)
    ));
    for e in errors {
        let location = e.location.as_ref().map(|l| erl(l, c)).unwrap_or_default();
        out.push_str(&format!(
            "ERR{f}{f}{location}{f}{code}{c}{text}{c}HL70357{f}{sev}{f}{f}{f}{f}{msg}\r",
            code = e.code,
            text = code_text(e.code),
            sev = e.severity,
            msg = escape(&e.message, d),
        ));
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// ERR-2 (ERL): segment id ^ sequence ^ field ^ repetition ^ component ^ sub-component.
fn erl(l: &Location, c: char) -> String {
    let mut parts = vec![l.segment.clone(), l.sequence.to_string()];
    for p in [l.field, l.repetition, l.component, l.subcomponent] {
        match p {
            Some(n) => parts.push(n.to_string()),
            None => break,
        }
    }
    parts.join(&c.to_string())
}

/// The ACK bytes in the sender's charset (UTF-8 when the text cannot be represented in it).
pub fn encode(text: &str, charset: Charset) -> Vec<u8> {
    charset
        .encode(text)
        .unwrap_or_else(|| text.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::hl7v2::parse;

    #[test]
    fn original_and_enhanced_modes_with_err() {
        let m = parse(
            b"MSH|^~\\&|HIS|H1|HUI|HUI|2024||ADT^A01|C1|P|2.5\rPID|1",
            Charset::Ascii,
        )
        .unwrap();
        let h = Header::of(&m);
        let ack = render(
            &h,
            m.delimiters(),
            Charset::Ascii,
            AckCode::Accept,
            "20240101",
            &[],
        );
        assert_eq!(
            ack,
            "MSH|^~\\&|HUI|HUI|HIS|H1|20240101||ACK^A01^ACK|ACKC1|P|2.5||||||\rMSA|AA|C1|\r"
        );
        let err = AckError {
            location: Some(Location {
                segment: "PID".into(),
                sequence: 2,
                field: Some(7),
                ..Location::default()
            }),
            code: 102,
            severity: 'E',
            message: "birth date 1980|13 is wrong".into(),
        };
        let ack = render(
            &h,
            m.delimiters(),
            Charset::Ascii,
            AckCode::Error,
            "2024",
            &[err],
        );
        assert!(
            ack.contains("MSA|AE|C1|birth date 1980\\F\\13 is wrong\r"),
            "{ack}"
        );
        assert!(
            ack.contains("ERR||PID^2^7|102^Data type error^HL70357|E||||birth date"),
            "{ack}"
        );
        let enhanced = parse(
            b"MSH|^~\\&|HIS|H1|HUI|HUI|2024||ADT^A01|C1|P|2.5|||AL|NE",
            Charset::Ascii,
        )
        .unwrap();
        let h = Header::of(&enhanced);
        assert!(
            render(
                &h,
                enhanced.delimiters(),
                Charset::Ascii,
                AckCode::Reject,
                "1",
                &[]
            )
            .contains("MSA|CR|C1")
        );
        assert!(h.wants_ack(AckCode::Accept));
    }
}
