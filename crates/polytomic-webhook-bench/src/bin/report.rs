//! The benchmark report: every pipeline interleaved in one process, the bomb cost, the heap of
//! hostile body shapes and the loopback server throughput, printed as markdown.
//!
//! ```sh
//! cargo run --release -p polytomic-webhook-bench --bin report            # the full report
//! cargo run --release -p polytomic-webhook-bench --bin report -- --quick # a smoke run (CI)
//! ```
//!
//! Options: `--quick` (few rounds, the smallest batch, 4 MiB hostile bodies, short server
//! runs), `--rounds N`, `--sizes 100,1000`, `--no-pipelines`, `--no-bomb`, `--no-heap`,
//! `--no-server`, `--sinks-only` (the `serve --sink` table alone), and `--only PIPELINE N`
//! (verify, then run N requests of one pipeline and exit: for `perf` or
//! `valgrind --tool=callgrind`).
//!
//! Why interleaved: on a shared or throttling machine, timing pipeline A for a minute and then
//! B for a minute measures the machine as much as the code. Here each round times every
//! pipeline once, back to back, and each ratio is the median of the per-round ratios.

use std::hint::black_box;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use peak_alloc::PeakAlloc;
use polytomic_webhook::event::{EventConfig, Fields, RawFields};
use polytomic_webhook_bench::bomb::{self, BombRun};
use polytomic_webhook_bench::events;
use polytomic_webhook_bench::hostile::{self, Case};
use polytomic_webhook_bench::payload::{Payload, SIZES};
use polytomic_webhook_bench::pipelines::{
    Pipeline, Pipelines, SECRET, baseline_router, ours_router, pipelines, request,
};
use polytomic_webhook_bench::server::{self, CONNECTIONS, Load, Server};
use polytomic_webhook_store::{DEFAULT_STREAM, Durability, Identity, RedisSink, Sink, SqliteSink};

// Counts heap bytes for the bomb and hostile-shape sections. Its two relaxed atomic updates per allocation also
// run during the pipeline timings, for every pipeline alike.
#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const MIB: usize = 1024 * 1024;
const GIB: usize = 1024 * MIB;
/// Frame size of the streamed bomb: about what one socket read yields.
const STREAM_FRAME: usize = 16 * 1024;

type Out = std::io::StdoutLock<'static>;

#[derive(Debug)]
struct Options {
    quick: bool,
    rounds: usize,
    sizes: Vec<usize>,
    bomb: bool,
    heap: bool,
    server: bool,
    /// The `serve --sink` table (part of the server section).
    sinks: bool,
    /// `--only NAME N`: run N requests of one pipeline and nothing else (for profilers).
    only: Option<(Pipeline, usize)>,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut options = Self {
            quick: false,
            rounds: 21,
            sizes: SIZES.to_vec(),
            bomb: true,
            heap: true,
            server: true,
            sinks: true,
            only: None,
        };
        let mut rounds = None;
        let mut sinks_only = false;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--no-bomb" => options.bomb = false,
                "--no-heap" => options.heap = false,
                "--no-server" => {
                    options.server = false;
                    options.sinks = false;
                }
                "--no-pipelines" => options.sizes.clear(),
                "--sinks-only" => sinks_only = true,
                "--only" => {
                    let name = args.next().ok_or("--only needs a pipeline name")?;
                    let pipeline = Pipeline::ALL
                        .into_iter()
                        .find(|p| p.name() == name)
                        .ok_or_else(|| format!("no pipeline {name}"))?;
                    let count = args.next().ok_or("--only needs a request count")?;
                    let count = count.parse().map_err(|_| format!("bad count {count}"))?;
                    options.only = Some((pipeline, count));
                }
                "--rounds" => {
                    let value = args.next().ok_or("--rounds needs a number")?;
                    rounds = Some(value.parse().map_err(|_| format!("bad --rounds {value}"))?);
                }
                "--sizes" => {
                    let value = args.next().ok_or("--sizes needs a list")?;
                    options.sizes = value
                        .split(',')
                        .map(|size| size.trim().replace('_', "").parse())
                        .collect::<Result<_, _>>()
                        .map_err(|_| format!("bad --sizes {value}"))?;
                }
                other => return Err(format!("unknown option {other}")),
            }
        }
        if options.quick {
            options.rounds = 3;
            options.sizes = vec![SIZES[0]];
        }
        if sinks_only {
            options.sizes.clear();
            options.bomb = false;
            options.heap = false;
            options.server = false;
        }
        if let Some(rounds) = rounds {
            options.rounds = rounds;
        }
        if options.rounds == 0 {
            return Err("--rounds must be at least 1".into());
        }
        Ok(options)
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("report failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let options = Options::parse()?;
    let mut out = std::io::stdout().lock();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    line(
        &mut out,
        &format!(
            "## Benchmark report\n\n{cores} cores; {} build; {} interleaved rounds per size; \
             µs per request, median over rounds; each ratio is the median of the per-round ratios.\n",
            if cfg!(debug_assertions) {
                "debug (figures meaningless)"
            } else {
                "release"
            },
            options.rounds,
        ),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("runtime: {error}"))?;
    let pipelines = pipelines();
    if let Some((pipeline, count)) = options.only {
        // For profilers: compare a run of N requests with one of 0 to get the cost of N.
        for &size in &options.sizes {
            let payload = Payload::generate(size);
            runtime.block_on(pipelines.verify(pipeline, &payload))?;
            if count > 0 {
                runtime.block_on(sample(&pipelines, pipeline, &payload, count))?;
            }
        }
        return Ok(());
    }
    let mut summary = Vec::new();
    for &size in &options.sizes {
        let payload = Payload::generate(size);
        let samples = time_size(&runtime, &pipelines, &payload, &options)?;
        summary.push((size, table(&mut out, &payload, &samples)));
    }
    if !summary.is_empty() {
        summary_table(&mut out, &summary);
    }

    if options.bomb {
        bomb_section(&mut out, &runtime, &options)?;
    }
    if options.heap {
        heap_section(&mut out, &runtime, &options)?;
        events_section(&mut out, &runtime, &options)?;
    }
    drop(runtime);
    if options.server {
        server_section(&mut out, cores, &options)?;
    }
    if options.sinks {
        sink_section(&mut out, cores, &options)?;
    }
    Ok(())
}

fn line(out: &mut Out, text: &str) {
    // A closed stdout only loses the report; nothing to recover.
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Per pipeline (in [`Pipeline::ALL`] order), µs per request in each round.
type Samples = Vec<Vec<f64>>;

fn time_size<S, B>(
    runtime: &tokio::runtime::Runtime,
    pipelines: &Pipelines<S>,
    payload: &Payload,
    options: &Options,
) -> Result<Samples, String>
where
    S: tower::Service<
            http::Request<axum::body::Body>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone,
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: std::fmt::Debug,
{
    for pipeline in Pipeline::ALL {
        runtime.block_on(pipelines.verify(pipeline, payload))?;
    }
    // Enough requests per sample that timer resolution and loop overhead vanish.
    let target = if options.quick {
        Duration::from_millis(2)
    } else {
        Duration::from_millis(40)
    };
    // The first requests run cold; calibrate on a second, warm probe.
    runtime.block_on(sample(pipelines, Pipeline::Baseline, payload, 3))?;
    let probe = runtime.block_on(sample(pipelines, Pipeline::Baseline, payload, 3))?;
    let iterations = (target.as_secs_f64() * 1e6 / probe).clamp(1.0, 100_000.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let iterations = iterations as usize;
    eprintln!(
        "{} records: {iterations} requests per sample, {} rounds",
        payload.records, options.rounds
    );

    let mut samples: Samples = vec![Vec::with_capacity(options.rounds); Pipeline::ALL.len()];
    // One unrecorded round warms caches, the allocator and the branch predictors.
    for round in 0..=options.rounds {
        for (index, pipeline) in Pipeline::ALL.into_iter().enumerate() {
            let micros = runtime.block_on(sample(pipelines, pipeline, payload, iterations))?;
            if round > 0 {
                samples[index].push(micros);
            }
        }
    }
    Ok(samples)
}

/// Runs `iterations` requests through `pipeline`; µs per request.
async fn sample<S, B>(
    pipelines: &Pipelines<S>,
    pipeline: Pipeline,
    payload: &Payload,
    iterations: usize,
) -> Result<f64, String>
where
    S: tower::Service<
            http::Request<axum::body::Body>,
            Response = http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone,
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: std::fmt::Debug,
{
    let elapsed = if pipeline.is_http() {
        // Building requests is the harness's work (a server's HTTP parser does it), so it
        // happens before the clock starts.
        let requests: Vec<_> = (0..iterations)
            .map(|_| request(&payload.gzip, SECRET))
            .collect();
        let started = Instant::now();
        for request in requests {
            let (status, _) = pipelines.call(pipeline, request).await;
            if status != http::StatusCode::OK {
                return Err(format!("{pipeline}: status {status} while timing"));
            }
        }
        started.elapsed()
    } else {
        let started = Instant::now();
        for _ in 0..iterations {
            black_box(pipeline.run_floor(black_box(&payload.gzip))?);
        }
        started.elapsed()
    };
    Ok(elapsed.as_secs_f64() * 1e6 / iterations as f64)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 0 {
        f64::midpoint(values[middle - 1], values[middle])
    } else {
        values[middle]
    }
}

fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}

/// The median over rounds of `a / b`, both timed in the same round.
fn ratio(samples: &Samples, a: Pipeline, b: Pipeline) -> f64 {
    let index = |p: Pipeline| Pipeline::ALL.iter().position(|&q| q == p).unwrap_or(0);
    let mut ratios: Vec<f64> = samples[index(a)]
        .iter()
        .zip(&samples[index(b)])
        .map(|(a, b)| a / b)
        .collect();
    median(&mut ratios)
}

/// The ratios the targets are about, for the summary.
#[derive(Clone, Copy, Debug)]
struct Ratios {
    ours_axum: f64,
    ours_raw: f64,
    ours_raw_floor_raw: f64,
    ours_typed: f64,
    ours_tower: f64,
    baseline_floor: f64,
    baseline_ours: f64,
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn table(out: &mut Out, payload: &Payload, samples: &Samples) -> Ratios {
    line(
        out,
        &format!(
            "### {} records ({} gzipped, {} of JSON)\n\n\
             | pipeline | median µs/request | p25–p75 µs | vs its floor |\n\
             |---|---:|---:|---:|",
            payload.records,
            kib(payload.gzip.len()),
            kib(payload.json.len()),
        ),
    );
    for (index, pipeline) in Pipeline::ALL.into_iter().enumerate() {
        let mut values = samples[index].clone();
        line(
            out,
            &format!(
                "| {pipeline} | {:.1} | {:.1}–{:.1} | {:.3} |",
                median(&mut values),
                quantile(&values, 0.25),
                quantile(&values, 0.75),
                ratio(samples, pipeline, pipeline.own_floor()),
            ),
        );
    }
    let ratios = Ratios {
        ours_axum: ratio(samples, Pipeline::OursAxum, Pipeline::Floor),
        ours_raw: ratio(samples, Pipeline::OursRaw, Pipeline::Floor),
        ours_raw_floor_raw: ratio(samples, Pipeline::OursRaw, Pipeline::FloorRaw),
        ours_typed: ratio(samples, Pipeline::OursTyped, Pipeline::FloorTyped),
        ours_tower: ratio(samples, Pipeline::OursTower, Pipeline::Floor),
        baseline_floor: ratio(samples, Pipeline::Baseline, Pipeline::Floor),
        baseline_ours: ratio(samples, Pipeline::Baseline, Pipeline::OursAxum),
    };
    line(
        out,
        &format!(
            "\nours_axum/floor = {:.3}, ours_raw/floor = {:.3}, ours_raw/floor_raw = {:.3}, \
             ours_typed/floor_typed = {:.3}, baseline/ours_axum = {:.3}\n",
            ratios.ours_axum,
            ratios.ours_raw,
            ratios.ours_raw_floor_raw,
            ratios.ours_typed,
            ratios.baseline_ours
        ),
    );
    ratios
}

fn summary_table(out: &mut Out, summary: &[(usize, Ratios)]) {
    line(
        out,
        "### Ratios (targets: ours/floor ≤ 1.05, baseline/ours_axum ≥ 1.35, ours_raw/floor ≤ 0.35, \
         ours_raw/floor_raw ≤ 1.10)\n\n\
         | records | ours_axum/floor | ours_raw/floor | ours_raw/floor_raw | ours_typed/floor_typed | ours_tower/floor | baseline/floor | baseline/ours_axum |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|",
    );
    for (size, r) in summary {
        line(
            out,
            &format!(
                "| {size} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                r.ours_axum,
                r.ours_raw,
                r.ours_raw_floor_raw,
                r.ours_typed,
                r.ours_tower,
                r.baseline_floor,
                r.baseline_ours
            ),
        );
    }
    line(out, "");
}

fn bomb_section(
    out: &mut Out,
    runtime: &tokio::runtime::Runtime,
    options: &Options,
) -> Result<(), String> {
    eprintln!("building the bomb: 1 GiB of zeros, gzipped");
    let bomb = bomb::gzip_zeros(GIB);
    let repeats = if options.quick { 1 } else { 5 };

    let ours = ours_router::<Fields>();
    let baseline = baseline_router();
    let measure = |router: &axum::Router, frame: Option<usize>| -> Result<BombRun, String> {
        let mut runs: Vec<BombRun> = (0..repeats)
            .map(|_| runtime.block_on(bomb::send(router, &bomb, frame)))
            .collect();
        if let Some(run) = runs
            .iter()
            .find(|run| run.status != http::StatusCode::PAYLOAD_TOO_LARGE)
        {
            return Err(format!("the bomb got {}, not 413", run.status));
        }
        runs.sort_by_key(|run| run.elapsed);
        let peak_heap = runs.iter().map(|run| run.peak_heap).max().unwrap_or(0);
        Ok(BombRun {
            peak_heap,
            ..runs[runs.len() / 2]
        })
    };
    let ours_whole = measure(&ours, None)?;
    let ours_streamed = measure(&ours, Some(STREAM_FRAME))?;
    let base = measure(&baseline, None)?;

    let mut inflates: Vec<(Duration, usize)> = Vec::new();
    let mut inflate_peak = 0;
    for _ in 0..repeats {
        let before = HEAP.current_usage();
        HEAP.reset_peak_usage();
        let run = bomb::inflate_limit(&bomb);
        inflate_peak = inflate_peak.max(HEAP.peak_usage().saturating_sub(before));
        if run.1 != 32 * MIB {
            return Err(format!("inflated {} bytes of the bomb, not 32 MiB", run.1));
        }
        inflates.push(run);
    }
    inflates.sort();
    let inflate = inflates[inflates.len() / 2].0;

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mib = |bytes: usize| bytes as f64 / MIB as f64;
    line(
        out,
        &format!(
            "### Decompression bomb: 1 GiB of zeros, {} gzipped, 32 MiB limit\n\n\
             Median of {repeats} runs; peak heap is the most allocated at once above what was in use \
             before the request.\n\n\
             | receiver | answer | time to answer | peak heap |\n\
             |---|---:|---:|---:|\n\
             | ours_axum, body in one frame (the 32 MiB limit fires) | {} | {:.2} ms | {:.2} MiB |\n\
             | ours_axum, body in 16 KiB frames (the 100:1 ratio check fires first) | {} | {:.2} ms | {:.2} MiB |\n\
             | baseline (tower-http + `DefaultBodyLimit` 32 MiB), one frame | {} | {:.2} ms | {:.2} MiB |\n\
             | inflate 32 MiB of the same stream into a presized `Vec` (flate2) | — | {:.2} ms | {:.2} MiB |\n\n\
             Targets (one frame, so the byte limit is what fires): peak heap ≤ 40 MiB \
             (32 MiB + 8 MiB): {:.2} MiB; time-to-413 ≤ 1.2 × inflating 32 MiB: {:.2}×.\n",
            kib(bomb.len()),
            ours_whole.status.as_u16(),
            ms(ours_whole.elapsed),
            mib(ours_whole.peak_heap),
            ours_streamed.status.as_u16(),
            ms(ours_streamed.elapsed),
            mib(ours_streamed.peak_heap),
            base.status.as_u16(),
            ms(base.elapsed),
            mib(base.peak_heap),
            ms(inflate),
            mib(inflate_peak),
            mib(ours_whole.peak_heap),
            ours_whole.elapsed.as_secs_f64() / inflate.as_secs_f64(),
        ),
    );
    Ok(())
}

/// The Events row: accepted events per second through the route, and the time and peak heap
/// of one unsigned request that inflates to 30 MiB.
fn events_section(
    out: &mut Out,
    runtime: &tokio::runtime::Runtime,
    options: &Options,
) -> Result<(), String> {
    let count = if options.quick { 500 } else { 5_000 };
    let repeats = if options.quick { 3 } else { 21 };
    let router = events::events_router(count);
    let signed: Vec<_> = (0..count).map(events::signed_event).collect();
    let elapsed = runtime.block_on(events::send_all(&router, &signed))?;
    let unsigned = events::unsigned_inflatable();
    let mut runs: Vec<_> = (0..repeats)
        .map(|_| runtime.block_on(events::send_unsigned(&router, &unsigned)))
        .collect();
    if let Some(run) = runs
        .iter()
        .find(|run| run.output != http::StatusCode::UNAUTHORIZED)
    {
        return Err(format!("an unsigned event got {}, not 401", run.output));
    }
    runs.sort_by_key(|run| run.elapsed);
    let peak_heap = runs.iter().map(|run| run.peak_heap).max().unwrap_or(0);
    line(
        out,
        &format!(
            "### Organisation Events route (in process, one thread)\n\n\
             The layer with its default limits (1 MiB received, 1 MiB decoded), the dedup layer \
             (in memory) and the extractor. Accepted: {count} distinct signed `sync.completed` \
             events, gzipped ({} bytes each), one after the other. Unsigned: {} of gzip that \
             inflates to 30 MiB, under another secret; median time of {repeats}, the largest \
             peak heap (above what was in use before; the body as sent is not counted, the \
             layer's copy of it is).\n\n\
             | | figure |\n|---|---:|\n\
             | accepted events per second | {:.0} |\n\
             | unsigned request: time to 401 | {:.2} ms |\n\
             | unsigned request: peak heap | {:.2} MiB |\n",
            signed[0].0.len(),
            kib(unsigned.0.len()),
            count as f64 / elapsed.as_secs_f64(),
            runs[runs.len() / 2].elapsed.as_secs_f64() * 1e3,
            peak_heap as f64 / MIB as f64,
        ),
    );
    Ok(())
}

fn heap_section(
    out: &mut Out,
    runtime: &tokio::runtime::Runtime,
    options: &Options,
) -> Result<(), String> {
    let size = if options.quick {
        hostile::QUICK_SIZE
    } else {
        hostile::FULL_SIZE
    };
    let event = EventConfig::default();
    let mib = |bytes: usize| bytes as f64 / MIB as f64;
    line(
        out,
        &format!(
            "### Heap of hostile bodies ({:.0} MiB decoded, gzipped)\n\n\
             One request each through the composed layer (default limits, ratio check off: these \
             bodies compress about 230:1) and the handler's `SyncRecords`; peak heap is the most \
             allocated at once above what was in use before the request, answer read included. \
             Default heap budget {:.0} MiB.\n\n\
             | shape | record type | decoded | gzipped | answer | peak heap | peak / decoded | \
             bound 4 × decoded + 1 MiB |\n\
             |---|---|---:|---:|---|---:|---:|---|",
            mib(size),
            mib(event.max_heap_bytes),
        ),
    );
    for case in Case::ALL {
        eprintln!("hostile body: {} with {}", case.shape, case.record_type);
        let run = runtime.block_on(case.run(size, event.clone()));
        run.check()?;
        line(
            out,
            &format!(
                "| {} | {} | {:.2} MiB | {} | {} | {:.2} MiB | {:.2} | {:.2} MiB: {} |",
                case.shape,
                case.record_type,
                mib(run.decoded),
                kib(run.gzipped),
                run.answer(),
                mib(run.peak_heap),
                run.peak_heap as f64 / run.decoded as f64,
                mib(run.bound()),
                if run.within_bound() { "pass" } else { "fail" },
            ),
        );
    }
    line(out, "");
    Ok(())
}

fn server_section(out: &mut Out, cores: usize, options: &Options) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .map_err(|error| format!("runtime: {error}"))?;
    let (runs, cases): (usize, Vec<(usize, usize)>) = if options.quick {
        (1, vec![(100, 320)])
    } else {
        (3, vec![(100, 6_000), (1_000, 1_200)])
    };
    line(
        out,
        &format!(
            "### Server throughput on loopback\n\n\
             Both servers and the load generator share one {cores}-thread runtime; \
             {CONNECTIONS} keep-alive connections; each figure pools {runs} runs per server, \
             alternating between the servers.\n\n\
             | records | server | requests | requests/s | p50 ms | p99 ms | vs hand-written |\n\
             |---:|---|---:|---:|---:|---:|---:|"
        ),
    );
    runtime.block_on(async {
        let mut addresses = Vec::new();
        for server in Server::ALL {
            addresses.push(
                server::start(server)
                    .await
                    .map_err(|error| format!("{server}: {error}"))?,
            );
        }
        for (records, requests) in cases {
            let payload = Payload::generate(records);
            eprintln!(
                "server throughput: {records} records, {requests} requests × {runs} runs per server"
            );
            let mut loads: Vec<Vec<Load>> = vec![Vec::new(); Server::ALL.len()];
            // One short warm-up per server (connections, allocator), then alternate.
            for address in &addresses {
                server::load(*address, &payload, CONNECTIONS * 4).await?;
            }
            for _ in 0..runs {
                for (index, address) in addresses.iter().enumerate() {
                    loads[index].push(server::load(*address, &payload, requests).await?);
                }
            }
            let merged: Vec<Load> = loads.iter().map(|runs| Load::merge(runs)).collect();
            let hand_written = merged[1].requests_per_second();
            for (server, load) in Server::ALL.into_iter().zip(&merged) {
                server_row(out, records, server.name(), load, hand_written);
            }
        }
        Ok::<(), String>(())
    })?;
    line(
        out,
        "\nTarget: the receiver route ≥ 0.9× the hand-written handler's requests/s.\n",
    );
    Ok(())
}

/// One row of a throughput table: requests, requests/s, p50 and p99 latency, and the ratio of
/// requests/s to `base`.
fn server_row(out: &mut Out, records: usize, name: &str, load: &Load, base: f64) {
    line(
        out,
        &format!(
            "| {records} | {name} | {} | {:.0} | {:.2} | {:.2} | {:.3} |",
            load.latencies.len(),
            load.requests_per_second(),
            load.latency(0.5).as_secs_f64() * 1e3,
            load.latency(0.99).as_secs_f64() * 1e3,
            load.requests_per_second() / base,
        ),
    );
}

/// `serve --sink` at 100-record batches, SQLite and Redis, against the receiver without a sink,
/// on the same runtime and connections as the server section. Every request to a sink carries
/// a batch of a sync of its own, so each one stores 100 new records.
fn sink_section(out: &mut Out, cores: usize, options: &Options) -> Result<(), String> {
    const RECORDS: usize = 100;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .map_err(|error| format!("runtime: {error}"))?;
    let (runs, requests) = if options.quick { (1, 320) } else { (3, 2_000) };
    let warm_up = CONNECTIONS * 4;
    let payload = Payload::generate(RECORDS);
    eprintln!(
        "sinks: gzipping {} distinct batches",
        warm_up + runs * requests
    );
    let warm_bodies = payload.from_syncs(0, warm_up);
    let run_bodies: Vec<Vec<bytes::Bytes>> = (0..runs)
        .map(|run| payload.from_syncs(warm_up + run * requests, requests))
        .collect();
    let dir = std::env::temp_dir().join(format!("polytomic-webhook-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let redis = RedisChild::start(&dir);
    line(
        out,
        &format!(
            "### Storing batches on loopback (`serve --sink`)\n\n\
             The receiver route without a sink (records as `RawFields`, as `serve` reads them), \
             and the same layer storing every batch through \
             `StoreService` into SQLite (WAL, synchronous=NORMAL) and Redis (local, no \
             persistence); one {cores}-thread runtime with the load generator; {CONNECTIONS} \
             connections; {runs} runs per server, alternating. Each request to a sink carries \
             100 new records.\n\n\
             | records | server | requests | requests/s | p50 ms | p99 ms | vs no sink |\n\
             |---:|---|---:|---:|---:|---:|---:|"
        ),
    );
    let result = runtime.block_on(async {
        let failed = |what: &str, error: &dyn std::fmt::Display| format!("{what}: {error}");
        // What `serve` runs without a sink, minus writing lines: the same layer and the same
        // record type (`RawFields`) as the sinks get.
        let mut servers = vec![(
            "receiver, no sink (RawFields)",
            server::start_router(ours_router::<RawFields>())
                .await
                .map_err(|error| failed("receiver", &error))?,
        )];
        let sqlite = SqliteSink::open(dir.join("report.db"), Identity::hash(), Durability::Process)
            .await
            .map_err(|error| failed("sqlite", &error))?;
        servers.push((
            "serve --sink sqlite:",
            server::start_with_sink(std::sync::Arc::new(sqlite) as std::sync::Arc<dyn Sink>)
                .await
                .map_err(|error| failed("sqlite server", &error))?,
        ));
        if let Some(redis) = &redis {
            let sink = RedisSink::connect(&redis.url(), DEFAULT_STREAM, Identity::hash(), None)
                .await
                .map_err(|error| failed("redis", &error))?;
            servers.push((
                "serve --sink redis://",
                server::start_with_sink(std::sync::Arc::new(sink))
                    .await
                    .map_err(|error| failed("redis server", &error))?,
            ));
        }
        for (_, address) in &servers {
            server::load_bodies(*address, &warm_bodies, RECORDS, warm_up).await?;
        }
        let mut loads: Vec<Vec<Load>> = vec![Vec::new(); servers.len()];
        for bodies in &run_bodies {
            for (index, (_, address)) in servers.iter().enumerate() {
                loads[index].push(server::load_bodies(*address, bodies, RECORDS, requests).await?);
            }
        }
        let merged: Vec<Load> = loads.iter().map(|runs| Load::merge(runs)).collect();
        let without = merged[0].requests_per_second();
        for ((name, _), load) in servers.iter().zip(&merged) {
            server_row(out, RECORDS, name, load, without);
        }
        Ok::<(), String>(())
    });
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    line(
        out,
        "\nTargets: Redis ≥ 0.6× and SQLite ≥ 0.5× the requests/s of the receiver without a sink.\n",
    );
    Ok(())
}

/// A `redis-server` of the report's own on a free loopback port, killed when dropped; `None`
/// (with a note) when it is not installed.
struct RedisChild {
    child: std::process::Child,
    port: u16,
}

impl RedisChild {
    fn start(dir: &std::path::Path) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(dir)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn();
        let Ok(child) = child else {
            eprintln!("sinks: redis-server is not installed; no Redis row");
            return None;
        };
        let redis = Self { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("sinks: redis-server did not start; no Redis row");
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
