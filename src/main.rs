//! The `huitong` command: serve the gateway, validate files, print the version.

use clap::{Parser, Subcommand};
use huitong::config::{Overrides, Settings};
use huitong::model::{self, ParseLimits};
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
    /// Check FHIR JSON files (structure and R4 primitive rules); prints an OperationOutcome per failing file.
    Validate {
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
    /// Print the version and the embedded definitions' provenance.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, overrides } => serve(config, overrides),
        Command::Validate { files } => validate(&files),
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

fn serve(config: Option<PathBuf>, flags: Overrides) -> ExitCode {
    let file = match config.as_deref().map(Overrides::from_file).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("huitong: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::resolve(&[&file, &flags]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("huitong: {e}");
            return ExitCode::from(2);
        }
    };
    huitong::telemetry::init_logging(settings.log_format, &settings.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("huitong: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Decode the embedded definitions before accepting traffic, not on the first request.
        let _ = huitong::definitions::Definitions::core();
        let mut server = match RunningServer::start(settings).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let stop = server.stop_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
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

/// SIGTERM or Ctrl-C.
async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut failed = 0;
    for f in files {
        let result = std::fs::read(f)
            .map_err(|e| model::FhirError::new(400, "exception", format!("cannot read: {e}")))
            .and_then(|bytes| model::parse_resource(&bytes, None, ParseLimits::default()));
        match result {
            Ok(r) => println!(
                "{}: ok ({})",
                f.display(),
                r.get("resourceType")
                    .and_then(|t| t.as_str())
                    .unwrap_or("?")
            ),
            Err(e) => {
                failed += 1;
                println!("{}: invalid", f.display());
                println!(
                    "{}",
                    serde_json::to_string_pretty(&e.outcome()).unwrap_or_default()
                );
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
