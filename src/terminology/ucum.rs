//! A syntax check of UCUM unit expressions (<https://ucum.org/ucum>, §2 grammar): prefixes,
//! atoms (base, derived, customary and `[bracketed]` arbitrary units), exponents, `.` and `/`,
//! parentheses, `{annotations}` and integer factors.
//!
//! UCUM is an infinite code system, so no value set can list it: a code is a member of "all of
//! UCUM" exactly when it parses. The atom table is the common part of the UCUM essence (base
//! units, SI derived units, clinical and customary units); an atom outside it is reported as
//! unknown rather than accepted. No unit conversion happens here.
//!
//! Invariant: parenthesis nesting is bounded ([`MAX_DEPTH`]), so no input can exhaust the stack.

/// The UCUM code system URL.
pub const SYSTEM: &str = "http://unitsofmeasure.org";

/// Deepest parenthesis nesting accepted.
const MAX_DEPTH: usize = 32;

/// Prefixes (both the decimal and the binary ones).
const PREFIXES: &[&str] = &[
    "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "da", "d", "c", "m", "u", "n", "p", "f", "a", "z",
    "y", "Ki", "Mi", "Gi", "Ti",
];

/// Atoms that take prefixes (UCUM "metric" units).
const METRIC_ATOMS: &[&str] = &[
    // base units
    "m",
    "s",
    "g",
    "rad",
    "K",
    "C",
    "cd",
    // SI and other metric derived units
    "mol",
    "sr",
    "Hz",
    "N",
    "Pa",
    "J",
    "W",
    "A",
    "V",
    "F",
    "Ohm",
    "S",
    "Wb",
    "Cel",
    "T",
    "H",
    "lm",
    "lx",
    "Bq",
    "Gy",
    "Sv",
    "L",
    "l",
    "ar",
    "t",
    "bar",
    "u",
    "eV",
    "pc",
    "[c]",
    "[h]",
    "[k]",
    "[eps_0]",
    "[mu_0]",
    "[e]",
    "[m_e]",
    "[m_p]",
    "[G]",
    "[g]",
    "[ly]",
    "gf",
    "Ky",
    "Gal",
    "dyn",
    "erg",
    "P",
    "St",
    "Mx",
    "G",
    "Oe",
    "Gb",
    "sb",
    "Lmb",
    "ph",
    "Ci",
    "R",
    "RAD",
    "REM",
    "cal_[15]",
    "cal_[20]",
    "cal_m",
    "cal_IT",
    "cal_th",
    "cal",
    "tex",
    "m[H2O]",
    "m[Hg]",
    "eq",
    "osm",
    "g%",
    "kat",
    "U",
    "[iU]",
    "[IU]",
    "mho",
    "Np",
    "B",
    "B[SPL]",
    "B[V]",
    "B[mV]",
    "B[uV]",
    "B[10.nV]",
    "B[W]",
    "B[kW]",
    "st",
    "b",
    "Ao",
    "bit",
    "By",
    "Bd",
    "Ohm",
    "[CCID_50]",
    "[TCID_50]",
    "[EID_50]",
    "[PFU]",
    "[FFU]",
    "[CFU]",
    "[BAU]",
    "[AU]",
    "[Amb'a'1'U]",
    "[PNU]",
    "[Lf]",
    "[D'ag'U]",
    "[tb'U]",
    "[ELU]",
    "[EU]",
    "[HPF]",
    "[LPF]",
    "[S]",
    "[IR]",
];

/// Atoms that do not take prefixes.
const PLAIN_ATOMS: &[&str] = &[
    "10*",
    "10^",
    "[pi]",
    "%",
    "[ppth]",
    "[ppm]",
    "[ppb]",
    "[pptr]",
    "mo",
    "mo_j",
    "mo_g",
    "mo_s",
    "wk",
    "a",
    "a_j",
    "a_g",
    "a_t",
    "d",
    "h",
    "min",
    "'",
    "''",
    "deg",
    "gon",
    "circ",
    "sph",
    "AU",
    "atm",
    "[psi]",
    "[in_i]",
    "[ft_i]",
    "[yd_i]",
    "[mi_i]",
    "[fth_i]",
    "[nmi_i]",
    "[kn_i]",
    "[sin_i]",
    "[sft_i]",
    "[syd_i]",
    "[cin_i]",
    "[cft_i]",
    "[cyd_i]",
    "[bf_i]",
    "[cr_i]",
    "[mil_i]",
    "[cml_i]",
    "[hd_i]",
    "[ft_us]",
    "[yd_us]",
    "[in_us]",
    "[rd_us]",
    "[ch_us]",
    "[lk_us]",
    "[rch_us]",
    "[rlk_us]",
    "[fth_us]",
    "[fur_us]",
    "[mi_us]",
    "[acr_us]",
    "[srd_us]",
    "[smi_us]",
    "[sct]",
    "[twp]",
    "[mil_us]",
    "[in_br]",
    "[ft_br]",
    "[rd_br]",
    "[ch_br]",
    "[lk_br]",
    "[fth_br]",
    "[pc_br]",
    "[yd_br]",
    "[mi_br]",
    "[nmi_br]",
    "[kn_br]",
    "[acr_br]",
    "[gal_us]",
    "[bbl_us]",
    "[qt_us]",
    "[pt_us]",
    "[gil_us]",
    "[foz_us]",
    "[fdr_us]",
    "[min_us]",
    "[crd_us]",
    "[bu_us]",
    "[gal_wi]",
    "[pk_us]",
    "[dqt_us]",
    "[dpt_us]",
    "[tbs_us]",
    "[tsp_us]",
    "[cup_us]",
    "[foz_m]",
    "[cup_m]",
    "[tsp_m]",
    "[tbs_m]",
    "[gal_br]",
    "[pk_br]",
    "[bu_br]",
    "[qt_br]",
    "[pt_br]",
    "[gil_br]",
    "[foz_br]",
    "[fdr_br]",
    "[min_br]",
    "[gr]",
    "[lb_av]",
    "[oz_av]",
    "[dr_av]",
    "[scwt_av]",
    "[lcwt_av]",
    "[ston_av]",
    "[lton_av]",
    "[stone_av]",
    "[pwt_tr]",
    "[oz_tr]",
    "[lb_tr]",
    "[sc_ap]",
    "[dr_ap]",
    "[oz_ap]",
    "[lb_ap]",
    "[oz_m]",
    "[lne]",
    "[pnt]",
    "[pca]",
    "[pnt_pr]",
    "[pca_pr]",
    "[pied]",
    "[pouce]",
    "[ligne]",
    "[didot]",
    "[cicero]",
    "[degF]",
    "[degR]",
    "[degRe]",
    "[Btu_39]",
    "[Btu_59]",
    "[Btu_60]",
    "[Btu_m]",
    "[Btu_IT]",
    "[Btu_th]",
    "[Btu]",
    "[HP]",
    "[den]",
    "[in_i'H2O]",
    "[in_i'Hg]",
    "[PRU]",
    "[wood'U]",
    "[diop]",
    "[p'diop]",
    "%[slope]",
    "[mesh_i]",
    "[Ch]",
    "[drp]",
    "[hnsf'U]",
    "[MET]",
    "[hp'_X]",
    "[hp'_C]",
    "[hp'_M]",
    "[hp'_Q]",
    "[hp_X]",
    "[hp_C]",
    "[hp_M]",
    "[hp_Q]",
    "[kp_X]",
    "[kp_C]",
    "[kp_M]",
    "[kp_Q]",
    "[pH]",
    "[car_m]",
    "[car_Au]",
    "[smgy'U]",
    "[knk'U]",
    "[mclg'U]",
    "[todd'U]",
    "[dye'U]",
    "[bdsk'U]",
    "[ka'U]",
    "[MPL'U]",
    "[GPL'U]",
    "[APL'U]",
    "[beth'U]",
    "[anti'Xa'U]",
    "[USP'U]",
    "[arb'U]",
    "[APL'U]",
    "[iU]",
    "[IU]",
    "[lbf_av]",
    "[k]",
    "bit_s",
    "[m/s2]",
    "[mu_0]",
    "[psi]",
    "[hp]",
];

/// Why a string is not a UCUM unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UcumError(pub String);

impl std::fmt::Display for UcumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `unit` is a syntactically valid UCUM expression made of known atoms.
pub fn check(unit: &str) -> Result<(), UcumError> {
    if unit.is_empty() {
        return Err(UcumError("an empty string is not a UCUM unit".into()));
    }
    // Annotations are free text (spaces allowed); everything outside them is ASCII without spaces.
    let mut in_annotation = false;
    let bad_char = unit.chars().any(|c| {
        match c {
            '{' => in_annotation = true,
            '}' => in_annotation = false,
            _ => {}
        }
        !c.is_ascii() || (c.is_whitespace() && !in_annotation)
    });
    if bad_char {
        return Err(UcumError(format!(
            "'{unit}' is not a UCUM unit: spaces and non-ASCII characters are not allowed"
        )));
    }
    let mut p = Parser {
        s: unit.as_bytes(),
        pos: 0,
        unit,
    };
    // main-term: an optional leading "/" (a reciprocal) then a term.
    if p.peek() == Some(b'/') {
        p.pos += 1;
    }
    p.term(0)?;
    if p.pos != p.s.len() {
        return Err(p.error("unexpected character"));
    }
    Ok(())
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    unit: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn error(&self, what: &str) -> UcumError {
        UcumError(format!(
            "'{}' is not a UCUM unit: {what} at character {}",
            self.unit,
            self.pos + 1
        ))
    }

    fn term(&mut self, depth: usize) -> Result<(), UcumError> {
        self.component(depth)?;
        while let Some(b'.' | b'/') = self.peek() {
            self.pos += 1;
            self.component(depth)?;
        }
        Ok(())
    }

    fn component(&mut self, depth: usize) -> Result<(), UcumError> {
        match self.peek() {
            None => Err(self.error("a unit is missing")),
            Some(b'(') => {
                if depth >= MAX_DEPTH {
                    return Err(self.error("parentheses nested too deeply"));
                }
                self.pos += 1;
                self.term(depth + 1)?;
                if self.peek() != Some(b')') {
                    return Err(self.error("')' expected"));
                }
                self.pos += 1;
                // A parenthesised term may not take an exponent in UCUM, but an annotation is fine.
                self.annotation_opt()
            }
            Some(b'{') => self.annotation_opt(),
            Some(b')') => Err(self.error("unbalanced ')'")),
            Some(b'.' | b'/') => Err(self.error("a unit is missing")),
            Some(_) => {
                let start = self.pos;
                while let Some(c) = self.peek() {
                    match c {
                        b'.' | b'/' | b'(' | b')' | b'{' => break,
                        b'[' => {
                            // Square brackets enclose an atom part that may contain '.', '/' etc.
                            match self.s[self.pos..].iter().position(|&b| b == b']') {
                                Some(end) => self.pos += end + 1,
                                None => return Err(self.error("unclosed '['")),
                            }
                        }
                        _ => self.pos += 1,
                    }
                }
                let symbol = &self.unit[start..self.pos];
                self.annotatable(symbol, start)?;
                self.annotation_opt()
            }
        }
    }

    fn annotation_opt(&mut self) -> Result<(), UcumError> {
        if self.peek() != Some(b'{') {
            return Ok(());
        }
        match self.s[self.pos..].iter().position(|&b| b == b'}') {
            Some(end) => {
                let body = &self.s[self.pos + 1..self.pos + end];
                if body.contains(&b'{') {
                    return Err(self.error("'{' inside an annotation"));
                }
                self.pos += end + 1;
                Ok(())
            }
            None => Err(self.error("unclosed '{'")),
        }
    }

    /// A simple unit with an optional exponent, or an integer factor.
    fn annotatable(&self, symbol: &str, start: usize) -> Result<(), UcumError> {
        if symbol.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(());
        }
        // The exponent is the trailing digits, with an optional sign before them.
        let digits = symbol.bytes().rev().take_while(u8::is_ascii_digit).count();
        let mut unit_end = symbol.len() - digits;
        if digits > 0 && unit_end > 0 && matches!(symbol.as_bytes()[unit_end - 1], b'+' | b'-') {
            unit_end -= 1;
        }
        let simple = &symbol[..unit_end];
        if simple.is_empty() {
            return Err(UcumError(format!(
                "'{}' is not a UCUM unit: a sign without a unit at character {}",
                self.unit,
                start + 1
            )));
        }
        if known_simple_unit(simple) {
            return Ok(());
        }
        // "10*3" style atoms end with '*' or '^' and take their exponent; already covered. An
        // atom may also end in digits itself (none in the table do), so try the whole symbol.
        if known_simple_unit(symbol) {
            return Ok(());
        }
        Err(UcumError(format!(
            "'{}' is not a UCUM unit: unknown unit '{simple}' at character {}",
            self.unit,
            start + 1
        )))
    }
}

fn known_simple_unit(s: &str) -> bool {
    if METRIC_ATOMS.contains(&s) || PLAIN_ATOMS.contains(&s) {
        return true;
    }
    PREFIXES.iter().any(|p| {
        s.strip_prefix(p)
            .is_some_and(|atom| !atom.is_empty() && METRIC_ATOMS.contains(&atom))
    })
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn common_clinical_units_are_valid() {
        for u in [
            "mg",
            "mg/dL",
            "mmol/L",
            "kg/m2",
            "10*3/uL",
            "10*-3",
            "%",
            "[arb'U]",
            "[IU]/L",
            "/min",
            "mm[Hg]",
            "cm[H2O]",
            "{score}",
            "mL/min/{1.73_m2}",
            "ug/(kg.h)",
            "Cel",
            "[degF]",
            "km/h",
            "1",
            "1/d",
            "kg.m/s2",
            "[lb_av]",
            "[in_i]",
            "s-1",
            "meq/L",
            "U/L",
            "m2",
            "{beats}/min",
            "g{total}",
            "10^6",
            "[pH]",
            "[ppm]",
            "ng/mL{FEU}",
            "mg/dL{milligram per deciliter}",
            "dB[SPL]",
            "KiBy",
        ] {
            assert_eq!(check(u), Ok(()), "{u}");
        }
    }

    #[test]
    fn malformed_units_are_invalid() {
        for u in [
            "", "mg/", "/", "mg//dL", "(mg", "mg)", "kg m", "[arb'U", "{x", "xyz", "mgg", "Cel/",
            "µg", "m.", "(())", "cm{a{b}}", "ml-", "+2",
        ] {
            assert!(check(u).is_err(), "{u} should be invalid");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = format!("{}m{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(check(&deep).is_err());
    }
}
