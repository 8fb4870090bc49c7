//! The `muster` binary: the agent (`muster agent`) and a Consul-compatible
//! command-line client (`muster members`, `muster kv get -recurse app/`, …).
//!
//! Owns: turning the process arguments into a command, the Go-style
//! single-dash long flags Consul users type (`-http-addr=…`, `-recurse`),
//! and the process contract: command output on stdout, errors on stderr,
//! exit code 0 on success and 1 on error (Consul's `members` additionally
//! exits 2 when nothing matched).
//!
//! Never does: agent work itself (`agent::run` owns it and its runtime) or
//! command logic (`commands`).

mod agent;
mod client;
mod commands;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "muster",
    about = "A Consul-compatible service mesh agent and its command-line client",
    // `muster -version` / `-v` are routed to the `version` command instead,
    // so there is a single version text.
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: TopCommand,
}

// Built once per process, so the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum TopCommand {
    /// Runs a muster agent
    Agent(agent::AgentArgs),
    #[command(flatten)]
    Client(commands::Command),
}

fn main() -> ExitCode {
    let args = version_alias(go_style_args(std::env::args()));
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help output is not an error; usage errors exit 1 like Go's flag
            // package rather than clap's 2.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::FAILURE } else { ExitCode::SUCCESS };
        }
    };
    let result = match cli.command {
        TopCommand::Agent(args) => agent::run(args).map(|()| ExitCode::SUCCESS),
        TopCommand::Client(command) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("Error starting the async runtime")
            .and_then(|rt| rt.block_on(commands::run(command))),
    };
    result.unwrap_or_else(|e| {
        // `{:#}` joins the context chain: "Error querying Consul agent:
        // Unexpected response code: 500 (No cluster leader)".
        eprintln!("{e:#}");
        ExitCode::FAILURE
    })
}

/// Rewrites Go-style long flags (`-name`, `-name=value`: one dash, a letter,
/// then at least one more of `[A-Za-z0-9_-]`) to clap's `--name…`. Negative
/// numbers (`-1`), a lone `-` (stdin), single-letter short flags (`-h`),
/// arguments already spelled `--name`, and everything after a bare `--` pass
/// through unchanged.
///
/// Unlike Go's flag package, this does not stop at the first positional
/// argument, so a value that itself looks like a long flag (`kv put k -abc`)
/// must come after `--`.
fn go_style_args(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut verbatim = false;
    for arg in args {
        if verbatim {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            verbatim = true;
            out.push(arg);
        } else if is_go_long_flag(&arg) {
            out.push(format!("-{arg}"));
        } else {
            out.push(arg);
        }
    }
    out
}

fn is_go_long_flag(arg: &str) -> bool {
    let Some(rest) = arg.strip_prefix('-') else {
        return false;
    };
    let name = rest.split_once('=').map_or(rest, |(name, _)| name);
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `muster -v` / `muster -version` print the version, as `consul -v` does.
fn version_alias(mut args: Vec<String>) -> Vec<String> {
    if let Some(first) = args.get_mut(1) {
        if first == "-v" || first == "--version" {
            *first = "version".to_string();
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn rewrite(args: &[&str]) -> Vec<String> {
        go_style_args(args.iter().map(|s| s.to_string()))
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(version_alias(rewrite(args)))
    }

    #[test]
    fn rewrites_go_long_flags() {
        assert_eq!(
            rewrite(&["muster", "kv", "get", "-recurse", "-http-addr=127.0.0.1:1", "-config-file", "x"]),
            ["muster", "kv", "get", "--recurse", "--http-addr=127.0.0.1:1", "--config-file", "x"]
        );
        assert_eq!(rewrite(&["-node_meta=a=b", "-ab", "-x2"]), ["--node_meta=a=b", "--ab", "--x2"]);
        assert_eq!(rewrite(&["-meta=k=-v x"]), ["--meta=k=-v x"]);
    }

    #[test]
    fn leaves_other_arguments_alone() {
        let untouched = [
            "-1",
            "-42",
            "-",
            "-h",
            "-n=3",
            "--recurse",
            "--http-addr=x",
            "value",
            "-9abc",
            "-a.b",
            "-a b",
            "",
        ];
        for arg in untouched {
            assert_eq!(rewrite(&[arg]), [arg], "{arg:?}");
        }
        assert_eq!(
            rewrite(&["kv", "put", "-cas", "--", "-recurse", "-x=1"]),
            ["kv", "put", "--cas", "--", "-recurse", "-x=1"]
        );
    }

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_consul_style_command_lines() {
        let cli =
            parse(&["muster", "kv", "put", "-cas", "-modify-index=5", "-flags", "7", "k", "-5"]).unwrap();
        let TopCommand::Client(commands::Command::Kv { command: commands::kv::KvCommand::Put(put) }) =
            cli.command
        else {
            panic!("not kv put");
        };
        assert!(put.cas);
        assert_eq!((put.modify_index, put.flags), (5, 7));
        assert_eq!((put.key.as_deref(), put.value.as_deref()), (Some("k"), Some("-5")));

        let cli = parse(&["muster", "kv", "put", "k", "-"]).unwrap();
        let TopCommand::Client(commands::Command::Kv { command: commands::kv::KvCommand::Put(put) }) =
            cli.command
        else {
            panic!("not kv put");
        };
        assert_eq!(put.value.as_deref(), Some("-"));

        let cli = parse(&[
            "muster",
            "catalog",
            "nodes",
            "-node-meta=rack=r1",
            "-node-meta",
            "os=linux",
            "-datacenter=dc2",
            "-stale",
            "-token=t",
        ])
        .unwrap();
        let TopCommand::Client(commands::Command::Catalog {
            command: commands::catalog::CatalogCommand::Nodes(nodes),
        }) = cli.command
        else {
            panic!("not catalog nodes");
        };
        assert_eq!(nodes.node_meta, [("rack".into(), "r1".into()), ("os".into(), "linux".into())]);
        assert_eq!(nodes.http.datacenter.as_deref(), Some("dc2"));
        assert!(nodes.http.stale);
        assert_eq!(nodes.http.token.as_deref(), Some("t"));

        assert!(matches!(parse(&["muster", "agent", "-dev"]).unwrap().command, TopCommand::Agent(_)));
        assert!(matches!(
            parse(&["muster", "members", "-wan", "-status=alive|left"]).unwrap().command,
            TopCommand::Client(commands::Command::Members(_))
        ));
    }

    #[test]
    fn version_spellings() {
        for v in ["-v", "-version", "--version", "version"] {
            assert!(
                matches!(
                    parse(&["muster", v]).unwrap().command,
                    TopCommand::Client(commands::Command::Version)
                ),
                "{v}"
            );
        }
    }
}
