//! calicoctl selector validate | canonical | match.
//! Prints to stdout and exits 0; an invalid selector (or labels) exits 2.

use calico_selector::Selector;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum SelectorCommand {
    /// Check a selector; prints "valid".
    Validate { selector: String },
    /// Print the canonical form of a selector.
    Canonical { selector: String },
    /// Print whether a selector matches a set of labels: true or false.
    Match {
        selector: String,
        /// Labels as a JSON object ('{"app":"web"}') or as k=v,k2=v2.
        #[arg(long, default_value = "{}")]
        labels: String,
    },
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed)
            .map_err(|e| format!("--labels is not a JSON object of strings: {e}"));
    }
    trimmed
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("--labels: {pair:?} is not key=value"))
        })
        .collect()
}

fn invalid(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(2)
}

pub fn run(cmd: &SelectorCommand) -> ExitCode {
    let text = match cmd {
        SelectorCommand::Validate { selector }
        | SelectorCommand::Canonical { selector }
        | SelectorCommand::Match { selector, .. } => selector,
    };
    let sel = match Selector::parse(text) {
        Ok(sel) => sel,
        Err(e) => return invalid(e),
    };
    match cmd {
        SelectorCommand::Validate { .. } => println!("valid"),
        SelectorCommand::Canonical { .. } => println!("{sel}"),
        SelectorCommand::Match { labels, .. } => match parse_labels(labels) {
            Ok(labels) => println!("{}", sel.matches(&labels)),
            Err(e) => return invalid(e),
        },
    }
    ExitCode::SUCCESS
}
