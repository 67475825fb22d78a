//! `latchkey-simulate`: runs seeds of the whole-system simulation (see `scripts/simulate`).
//!
//! One line per failing seed with the command that replays it, then
//! `simulated N seeds, F failed, trace hash of the last run H`; exit status 1 on failure.

use std::process::ExitCode;
use std::time::Instant;

use latchkey_aggregates::planted::Bug;

struct Args {
    seeds: u64,
    from: u64,
    trace: bool,
    bug: Option<Bug>,
    threads: u64,
    verbose: bool,
    /// Write the (one) seed's journal here as NDJSON instead of reporting.
    export_journal: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 100,
        from: 0,
        trace: false,
        bug: None,
        threads: 2,
        verbose: false,
        export_journal: None,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = |name: &str| words.next().ok_or(format!("{name} needs a value"));
        let number = |text: String, name: &str| {
            text.parse::<u64>()
                .map_err(|_| format!("{name} takes a whole number, not {text:?}"))
        };
        match word.as_str() {
            "--seeds" => args.seeds = number(value("--seeds")?, "--seeds")?,
            "--from" => args.from = number(value("--from")?, "--from")?,
            "--seed" => {
                args.from = number(value("--seed")?, "--seed")?;
                args.seeds = 1;
            }
            "--threads" => args.threads = number(value("--threads")?, "--threads")?.max(1),
            "--trace" => args.trace = true,
            "--verbose" => args.verbose = true,
            "--export-journal" => args.export_journal = Some(value("--export-journal")?),
            "--bug" => {
                let name = value("--bug")?;
                let bug = Bug::parse(&name).ok_or_else(|| {
                    let names: Vec<&str> = Bug::ALL.iter().map(|bug| bug.name()).collect();
                    format!("unknown bug {name:?}; known: {}", names.join(", "))
                })?;
                args.bug = Some(bug);
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.bug.is_some() && !cfg!(feature = "planted-bugs") {
        return Err("--bug needs a build with the planted-bugs feature (scripts/simulate builds it when --bug is given)".into());
    }
    if args.export_journal.is_some() && args.seeds != 1 {
        return Err("--export-journal writes one seed's journal: give --seed S".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("usage: scripts/simulate [--seeds N] [--from S] [--seed S] [--trace] [--bug NAME] [--threads T] [--seed S --export-journal FILE]");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    if let Some(path) = &args.export_journal {
        let lines: Vec<String> = latchkey_simulation::journal_lines(args.from)
            .iter()
            .map(|line| line.to_string())
            .collect();
        if let Err(error) = std::fs::write(path, lines.join("\n") + "\n") {
            eprintln!("could not write {path}: {error}");
            return ExitCode::FAILURE;
        }
        println!(
            "wrote {} events of seed {} to {path}",
            lines.len(),
            args.from
        );
        return ExitCode::SUCCESS;
    }
    let seeds: Vec<u64> = (args.from..args.from + args.seeds).collect();
    let threads = if args.trace {
        1
    } else {
        args.threads.min(args.seeds.max(1))
    };
    let bug = args.bug;
    let trace = args.trace;
    let mut outcomes: Vec<latchkey_simulation::Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|worker| {
                let mine: Vec<u64> = seeds
                    .iter()
                    .copied()
                    .filter(|seed| seed % threads == worker)
                    .collect();
                scope.spawn(move || {
                    #[cfg(feature = "planted-bugs")]
                    latchkey_aggregates::planted::plant(bug);
                    let _ = bug;
                    mine.into_iter()
                        .map(|seed| latchkey_simulation::run(seed, trace))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    outcomes.sort_by_key(|outcome| outcome.seed);
    let bug_flag = args
        .bug
        .map(|bug| format!(" --bug {}", bug.name()))
        .unwrap_or_default();
    let mut failed = 0;
    let _ = std::io::Write::flush(&mut std::io::stdout());
    for outcome in &outcomes {
        if outcome.failed() {
            failed += 1;
            println!(
                "seed {} failed: {} (and {} more) — replay: scripts/simulate --seed {}{bug_flag} --trace",
                outcome.seed,
                outcome.violations[0],
                outcome.violations.len() - 1,
                outcome.seed
            );
            if args.verbose {
                for violation in &outcome.violations {
                    println!("    {violation}");
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let last = outcomes.last().map_or(0, |outcome| outcome.trace_hash);
    eprintln!(
        "{} seeds in {elapsed:.1} s: {:.1} seeds/s on {threads} threads",
        outcomes.len(),
        outcomes.len() as f64 / elapsed.max(1e-9)
    );
    println!(
        "simulated {} seeds, {failed} failed, trace hash of the last run {last:016x}",
        outcomes.len()
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
