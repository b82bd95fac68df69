//! weft-init: the init container that redirects a pod's TCP traffic into
//! the weft-proxy sidecar. See `weft-init --help`.
#![forbid(unsafe_code)]

mod apply;
mod backend;
mod cli;
mod rules;
mod select;
mod validate;

use anyhow::{bail, Result};
// The parsers live in the library, so that the injector shares them.
use clap::Parser;
use std::process::ExitCode;
use weft_init::{cidr, ports};

use backend::Tables;
use cli::{Cli, Command, InitArgs};
use rules::Family;

/// Exit code for a command line that cannot be used (BSD EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => return usage_error(&first_line(&e.to_string())),
    };
    let result = match cli.command {
        Some(Command::Validate(args)) => args.validate().run(),
        None => match cli.init.redirect() {
            Ok(_) => init(&cli.init),
            Err(reason) => return usage_error(&reason),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-init: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("invalid command line");
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

fn usage_error(reason: &str) -> ExitCode {
    eprintln!("weft-init: {reason} (see weft-init --help)");
    ExitCode::from(EXIT_USAGE)
}

fn init(args: &InitArgs) -> Result<()> {
    let redirect = args.redirect().map_err(anyhow::Error::msg)?;
    let families: Vec<Family> = if args.ipv6 {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    };
    let sets: Vec<_> = families.iter().map(|f| redirect.rules(*f)).collect();

    if args.dry_run {
        for set in &sets {
            println!("# {} (iptables-restore --noflush input)", set.family.name());
            print!("{}", set.to_restore());
        }
        return Ok(());
    }

    if !backend::has_net_admin()? {
        bail!(
            "missing the NET_ADMIN capability: run weft-init as root or with \
             securityContext.capabilities.add [NET_ADMIN]; nothing was changed"
        );
    }
    // Find every tool before changing anything.
    let tables = families
        .iter()
        .map(|f| match args.iptables_mode {
            Some(mode) => Tables::find(*f, mode),
            None => Tables::detect(*f),
        })
        .collect::<Result<Vec<_>>>()?;

    if args.cleanup {
        let removed = apply::cleanup(&tables)?;
        for (t, removed) in tables.iter().zip(removed) {
            if removed {
                println!("removed weft's rules: {}", t.describe());
            } else {
                println!("no weft rules to remove: {}", t.describe());
            }
        }
        return Ok(());
    }

    apply::install(&tables, &sets)?;
    for (t, set) in tables.iter().zip(&sets) {
        println!("installed {} rules: {}", set.rules.len(), t.describe());
        for rule in &set.rules {
            println!("  {rule}");
        }
    }
    Ok(())
}
