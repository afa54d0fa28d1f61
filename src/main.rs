//! The `huitong` command: serve the gateway, validate files, print the version.

use clap::{Parser, Subcommand};
use huitong::config::{Overrides, Settings};
use huitong::model;
use huitong::server::RunningServer;
use std::path::PathBuf;
use std::process::ExitCode;

/// Huitong (汇通): a FHIR R4 interoperability gateway.
#[derive(Parser)]
#[command(name = "huitong", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// `Serve` carries every configuration flag; the enum is built once per process, so its size is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the gateway (FHIR REST API on the embedded store).
    Serve {
        /// TOML config file; its keys are the long flag names (see README).
        #[arg(long, env = "HUITONG_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Validate FHIR JSON files against their core definition and profiles, offline; prints an
    /// OperationOutcome per file with issues and exits 1 when any file has errors.
    Validate {
        /// Profile (canonical URL) every file must conform to; repeatable.
        #[arg(long = "profile")]
        profiles: Vec<String>,
        /// Folder of conformance resources (JSON files, FHIR packages) to load [default: ./profiles]
        #[arg(
            long = "profiles",
            env = "HUITONG_PROFILES",
            default_value = "profiles"
        )]
        profiles_dir: PathBuf,
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Evaluate a FHIRPath expression over a resource; prints the result collection as JSON with types.
    Fhirpath {
        /// The expression, e.g. `Patient.name.given.first()`.
        expression: String,
        /// A FHIR JSON file.
        file: PathBuf,
    },
    /// Ingest files of HL7 v2 messages into the store (as the MLLP listener would); exits 1 when
    /// any message is not accepted.
    Ingest {
        #[command(subcommand)]
        what: IngestKind,
    },
    /// HL7 v2 messages that were not committed: `huitong deadletter list`, `huitong deadletter
    /// replay ID|all` (after a fix; exits 1 when any fails again).
    Deadletter {
        #[command(subcommand)]
        what: DeadletterKind,
    },
    /// Convert HL7 v2 messages to FHIR without storing them.
    Convert {
        #[command(subcommand)]
        what: ConvertKind,
    },
    /// Print the version and the embedded definitions' provenance.
    Version,
    /// Run TestScript suites against a FHIR server (default: an embedded Huitong).
    Conformance {
        #[command(subcommand)]
        what: ConformanceKind,
    },
    /// Issue a signed JWT bearer token from a local key (development and tests), or print the
    /// key's public JWKS with `--jwks`.
    Token(huitong::security::cli::TokenArgs),
    /// The audit trail: `huitong audit verify --data DIR [--key KEY.pem]`.
    Audit {
        #[command(subcommand)]
        what: huitong::security::cli::AuditCommand,
    },
}

#[derive(Subcommand)]
enum ConformanceKind {
    /// `huitong conformance run [--target URL] [--suite NAME|all] [--report DIR]`; exits 1 when a
    /// script fails that `conformance/expected.toml` does not list.
    Run(huitong::conformance::cli::RunArgs),
}

#[derive(Subcommand)]
enum IngestKind {
    /// `huitong ingest hl7v2 FILE...`: one or many messages per file.
    Hl7v2 {
        /// TOML config file (the same as `serve`).
        #[arg(long, env = "HUITONG_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// `huitong ingest cda FILE...`: one CDA document (WS/T 500, C-CDA) per file.
    Cda {
        #[arg(long, env = "HUITONG_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// `huitong ingest hl7v3 FILE...`: one HL7 v3 message (bare or in a SOAP envelope) per file.
    Hl7v3 {
        #[arg(long, env = "HUITONG_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// `huitong ingest feed NAME FILE...`: records (`.csv`, `.json`, `.ndjson`) through the feed
    /// `mappings/feeds/NAME`, one transaction per record.
    Feed {
        /// TOML config file (the same as `serve`).
        #[arg(long, env = "HUITONG_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
        /// Charset of CSV files: UTF-8 or GB18030.
        #[arg(long, default_value = "UTF-8")]
        charset: String,
        /// All or nothing per file: one bad record commits none of the file.
        #[arg(long)]
        atomic: bool,
        name: String,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DeadletterKind {
    /// One line per dead letter, newest first: id, received (ms), facility|control id, reason.
    List {
        #[arg(long, env = "HUITONG_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Send one dead letter (by id) or `all` (oldest first) through the pipeline again; each
    /// leaves the list, and one that fails again is listed anew with its new reason.
    Replay {
        #[arg(long, env = "HUITONG_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
        which: huitong::ingest::hl7v2::pipeline::Replay,
    },
}

#[derive(Subcommand)]
enum ConvertKind {
    /// `huitong convert hl7v2 [--explain] FILE`: prints the transaction Bundle of each message.
    Hl7v2 {
        /// Print where each value went instead of the Bundle.
        #[arg(long)]
        explain: bool,
        /// Folder of mapping rules [default: ./mappings]
        #[arg(long, env = "HUITONG_MAPPINGS", default_value = "mappings")]
        mappings: PathBuf,
        /// Charset when MSH-18 is empty.
        #[arg(long, default_value = "ASCII")]
        charset: String,
        /// UTC offset for times without one.
        #[arg(long, default_value = "+08:00")]
        timezone: String,
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, overrides } => serve(config, overrides),
        Command::Validate {
            profiles,
            profiles_dir,
            files,
        } => validate(&profiles, &profiles_dir, &files),
        Command::Fhirpath { expression, file } => {
            match huitong::fhirpath::run_cli(&expression, &file) {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("huitong fhirpath: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Ingest {
            what:
                IngestKind::Hl7v2 {
                    config,
                    overrides,
                    files,
                },
        } => ingest_hl7v2(config, overrides, &files),
        Command::Deadletter {
            what: DeadletterKind::List { config, overrides },
        } => match ingest_setup(config, overrides) {
            Ok((settings, _)) => match huitong::ingest::hl7v2::cli::list_dead_letters(&settings) {
                Ok(n) => {
                    eprintln!("{n} dead letters");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("huitong deadletter: {e}");
                    ExitCode::from(2)
                }
            },
            Err(code) => code,
        },
        Command::Deadletter {
            what:
                DeadletterKind::Replay {
                    config,
                    overrides,
                    which,
                },
        } => match ingest_setup(config, overrides) {
            Ok((settings, runtime)) => finish_ingest(
                runtime.block_on(huitong::ingest::hl7v2::cli::replay_dead_letters(
                    settings, which,
                )),
                "failed again",
            ),
            Err(code) => code,
        },
        Command::Ingest {
            what:
                IngestKind::Cda {
                    config,
                    overrides,
                    files,
                },
        } => ingest_xml(config, overrides, &files, false),
        Command::Ingest {
            what:
                IngestKind::Hl7v3 {
                    config,
                    overrides,
                    files,
                },
        } => ingest_xml(config, overrides, &files, true),
        Command::Ingest {
            what:
                IngestKind::Feed {
                    config,
                    overrides,
                    charset,
                    atomic,
                    name,
                    files,
                },
        } => ingest_feed(config, overrides, &charset, atomic, &name, &files),
        Command::Convert {
            what:
                ConvertKind::Hl7v2 {
                    explain,
                    mappings,
                    charset,
                    timezone,
                    file,
                },
        } => {
            let Some(cs) = huitong::ingest::hl7v2::Charset::from_msh18(&charset) else {
                eprintln!("huitong convert: '{charset}' is not an HL7 v2 character set");
                return ExitCode::from(2);
            };
            match huitong::ingest::hl7v2::cli::convert_file(
                &mappings, cs, &timezone, &file, explain,
            ) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("huitong convert: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Conformance {
            what: ConformanceKind::Run(args),
        } => conformance_run(&args),
        Command::Token(args) => huitong::security::cli::token(&args),
        Command::Audit { what } => huitong::security::cli::audit(&what),
        Command::Version => {
            let defs = huitong::definitions::Definitions::core().artefact();
            println!(
                "huitong {} (FHIR {}, core definitions from {})",
                env!("CARGO_PKG_VERSION"),
                defs.fhir_version,
                defs.source
            );
            ExitCode::SUCCESS
        }
    }
}

/// `huitong ingest feed`: exits 1 when any record is rejected.
fn ingest_feed(
    config: Option<PathBuf>,
    flags: Overrides,
    charset: &str,
    atomic: bool,
    name: &str,
    files: &[PathBuf],
) -> ExitCode {
    let Some(charset) = huitong::ingest::feed::csv::CsvCharset::from_label(charset) else {
        eprintln!("huitong ingest feed: charset '{charset}' is not UTF-8 or GB18030");
        return ExitCode::from(2);
    };
    let (settings, runtime) = match ingest_setup(config, flags) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let opts = huitong::ingest::feed::cli::FeedFiles { charset, atomic };
    let run = runtime.block_on(huitong::ingest::feed::cli::ingest_files(
        settings, name, files, opts,
    ));
    finish_ingest(run, "rejected")
}

/// `huitong ingest cda|hl7v3`: exits 1 when any file is not accepted.
fn ingest_xml(config: Option<PathBuf>, flags: Overrides, files: &[PathBuf], v3: bool) -> ExitCode {
    let (settings, runtime) = match ingest_setup(config, flags) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let run = if v3 {
        runtime.block_on(huitong::ingest::hl7v3::cli::ingest_files(settings, files))
    } else {
        runtime.block_on(huitong::ingest::cda::cli::ingest_files(settings, files))
    };
    finish_ingest(run, "failed")
}

/// The settings (file < environment < flags) and the runtime an ingest command runs on.
fn ingest_setup(
    config: Option<PathBuf>,
    flags: Overrides,
) -> Result<(Settings, tokio::runtime::Runtime), ExitCode> {
    let file = config
        .as_deref()
        .map(Overrides::from_file)
        .transpose()
        .map_err(|e| {
            eprintln!("huitong: {e}");
            ExitCode::from(2)
        })?
        .unwrap_or_default();
    let settings = Settings::resolve(&[&file, &flags]).map_err(|e| {
        eprintln!("huitong: {e}");
        ExitCode::from(2)
    })?;
    Ok((settings, runtime()?))
}

/// Prints the counts; exit 1 when anything was not accepted, 2 when the run itself failed.
fn finish_ingest<E: std::fmt::Display>(run: Result<(usize, usize), E>, not_ok: &str) -> ExitCode {
    match run {
        Ok((ok, failed)) => {
            println!("{ok} accepted, {failed} {not_ok}");
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("huitong ingest: {e}");
            ExitCode::from(2)
        }
    }
}

fn ingest_hl7v2(config: Option<PathBuf>, flags: Overrides, files: &[PathBuf]) -> ExitCode {
    let (settings, runtime) = match ingest_setup(config, flags) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let run = runtime.block_on(huitong::ingest::hl7v2::cli::ingest_files(settings, files));
    finish_ingest(run, "failed")
}

fn serve(config: Option<PathBuf>, flags: Overrides) -> ExitCode {
    let file = match config.as_deref().map(Overrides::from_file).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("huitong: {e}");
            return ExitCode::from(2);
        }
    };
    // The MLLP listener is on by default for `serve` (not for embedded or test servers).
    let serve_defaults = Overrides {
        mllp_addr: Some("127.0.0.1:2575".into()),
        ..Overrides::default()
    };
    let settings = match Settings::resolve(&[&serve_defaults, &file, &flags]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("huitong: {e}");
            return ExitCode::from(2);
        }
    };
    huitong::telemetry::init_logging(settings.log_format, &settings.log_level);
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        // Decode the embedded definitions before accepting traffic, not on the first request.
        let _ = huitong::definitions::Definitions::core();
        // Take over SIGTERM before the server can answer /readyz: a supervisor that sees it ready
        // and stops it at once must get a graceful shutdown, not the default kill.
        let signal = shutdown_signal();
        let mut server = match RunningServer::start(settings).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let stop = server.stop_handle();
        tokio::spawn(async move {
            signal.await;
            tracing::info!(
                "shutdown requested: finishing in-flight requests and flushing the store"
            );
            if let Some(s) = stop {
                let _ = s.send(());
            }
        });
        match server.wait().await {
            Ok(()) => {
                tracing::info!("stopped cleanly");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "stopped with an error");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM or Ctrl-C. The SIGTERM handler is installed when this is called (inside the runtime),
/// not when the returned future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let term = async {
                match term {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! { _ = ctrl_c => {}, _ = term => {} }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    }
}

fn validate(profiles: &[String], profiles_dir: &std::path::Path, files: &[PathBuf]) -> ExitCode {
    use huitong::validation::Validator;
    use std::sync::Arc;
    let registry = Arc::new(huitong::registry::Registry::with_core(
        huitong::definitions::Definitions::core(),
    ));
    if profiles_dir.is_dir() {
        for p in huitong::validation::load_profiles(&registry, profiles_dir) {
            eprintln!("warning: {p}");
        }
    }
    let terminology = Arc::new(huitong::terminology::Terminology::new(registry.clone()));
    let validator = Validator::new(registry, terminology);
    let mut failed = 0;
    for f in files {
        let report = std::fs::read(f)
            .map_err(|e| model::FhirError::new(400, "exception", format!("cannot read: {e}")))
            .and_then(|bytes| model::parse_json(&bytes))
            .map(|json| validator.validate(&json, profiles, true));
        let (verdict, outcome) = match report {
            Ok(r) if r.has_errors() => {
                failed += 1;
                (
                    format!("invalid ({} errors)", r.error_count()),
                    Some(r.outcome()),
                )
            }
            Ok(r) if r.issues.is_empty() => ("ok".to_string(), None),
            Ok(r) => (
                format!("ok ({} warnings or notes)", r.issues.len()),
                Some(r.outcome()),
            ),
            Err(e) => {
                failed += 1;
                ("invalid".to_string(), Some(e.outcome()))
            }
        };
        println!("{}: {verdict}", f.display());
        if let Some(o) = outcome {
            println!("{}", serde_json::to_string_pretty(&o).unwrap_or_default());
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn conformance_run(args: &huitong::conformance::cli::RunArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(huitong::conformance::cli::run(args)) {
        Ok(out) => {
            for line in &out.summary {
                println!("{line}");
            }
            ExitCode::from(out.code)
        }
        Err(e) => {
            eprintln!("huitong conformance: {e}");
            ExitCode::from(2)
        }
    }
}

/// The multi-threaded tokio runtime the commands run on; failure is reported and exits non-zero.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("huitong: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}
