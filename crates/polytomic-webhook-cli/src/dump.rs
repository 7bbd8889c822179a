//! `dump`: every record a sink holds, one JSON line each, in store order.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Args;
use polytomic_webhook_store::SinkUrl;

use crate::{EXIT_FAILED, EXIT_USAGE, NAME};

#[derive(Args)]
#[command(
    about = "Print every record a sink holds, as one JSON line each, in store order",
    long_about = "Print every record a sink holds, as one JSON line each, in store order.\n\n\
        Each line is `{\"sync_id\":…,\"sync_name\":…,\"key\":…,\"hash\":…,\"fields\":{…}}`: \
        `key` is the key field's JSON value (null when the record's hash identified it) and \
        `fields` the record's fields exactly as received. With Redis, records of one sync are \
        in store order, and syncs are interleaved by the time each record was stored.",
    after_help = "Examples:\n  \
        polytomic-webhook dump --sink sqlite:records.db\n  \
        polytomic-webhook dump --sink 'redis://127.0.0.1:6379/0?stream=polytomic:records' | wc -l\n\n\
        Exit status: 0 printed; 1 the sink cannot be read; 2 bad arguments."
)]
pub(crate) struct DumpArgs {
    /// The sink to read: `sqlite:PATH` or `redis://HOST:PORT[/DB][?stream=NAME]`.
    #[arg(long, value_name = "URL")]
    sink: SinkUrl,
}

pub(crate) async fn run(args: DumpArgs) -> ExitCode {
    if let SinkUrl::Sqlite(path) = &args.sink {
        // Opening would create an empty database; a typo should say so instead.
        if !path.is_file() {
            eprintln!("{NAME}: no SQLite file at {}", path.display());
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let mut records = match args.sink.record_stream().await {
        Ok(records) => records,
        Err(error) => {
            eprintln!("{NAME}: cannot read the sink: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // A page at a time: memory does not grow with the sink, and the first line comes before
    // the sink has been read to its end.
    let mut out = io::BufWriter::new(io::stdout().lock());
    while let Some(record) = records.next().await {
        let written = match record {
            Ok(record) => serde_json::to_writer(&mut out, &record)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n")),
            Err(error) => {
                let _ = out.flush();
                eprintln!("{NAME}: cannot read the sink: {error}");
                return ExitCode::from(EXIT_FAILED);
            }
        };
        if let Err(error) = written {
            eprintln!("{NAME}: cannot write the records: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    }
    match out.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{NAME}: cannot write the records: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
