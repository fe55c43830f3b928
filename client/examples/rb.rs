//! `rb`: a small command-line client on top of `ringbearer-client`, for trying a server by
//! hand (README "First real use").
//!
//! ```text
//! rb [--url ws://127.0.0.1:8080/ws | --url wss://localhost:8443/ws [--ca cert.pem]] --token JWT create NAME [--wedding W] [--type shared|broadcast|private]
//! rb [--url …] --token JWT listen CHANNEL [--count N] [--last-seen ID]
//! rb [--url …] --token JWT publish CHANNEL JSON [--type T] [--priority P] [--event E]
//! ```
//! `--ca FILE` is the PEM certificate(s) to trust for `wss://` (the `cert.pem` of
//! `ringbearer dev-cert`); without it the system's CA bundle is used.
//! Errors print the server's code (e.g. `WS_WEDDING_ISOLATION_VIOLATION`) and exit 1.

use ringbearer_client::{
    Client, ClientConfig, CreateChannel, Event, Priority, Publish, SubscribeOptions,
};
use std::process::exit;

fn usage() -> ! {
    eprintln!(
        "usage: rb [--url URL] [--ca CERT.pem] --token JWT <create NAME [--wedding W] [--type T] | listen CHANNEL [--count N] [--last-seen ID] | publish CHANNEL JSON [--type T] [--priority P] [--event E]>"
    );
    exit(2)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        if i + 1 >= args.len() {
            usage();
        }
        let v = args.remove(i + 1);
        args.remove(i);
        Some(v)
    };
    let url = take("--url").unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into());
    let ca = take("--ca").map(std::path::PathBuf::from);
    let token = take("--token").unwrap_or_else(|| usage());
    let wedding = take("--wedding");
    let kind = take("--type");
    let count: Option<usize> = take("--count").map(|c| c.parse().unwrap_or_else(|_| usage()));
    let last_seen: Option<u64> = take("--last-seen").map(|c| c.parse().unwrap_or_else(|_| usage()));
    let priority = take("--priority");
    let event = take("--event");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(async move {
        let (client, mut events) = match Client::connect(ClientConfig {
            ca_file: ca,
            ..ClientConfig::new(url, token)
        })
        .await
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("connect: {e}");
                return 1;
            }
        };
        let fail = |e: ringbearer_client::Error| {
            eprintln!("{e}");
            1
        };
        match args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["create", name] => {
                let req = CreateChannel {
                    wedding_id: wedding,
                    channel_type: kind,
                    ..CreateChannel::new(*name)
                };
                match client.create(&req).await {
                    Ok(c) => println!(
                        "created {} ({}) at {}",
                        c.channel_name, c.channel_id, c.created_at
                    ),
                    Err(e) => return fail(e),
                }
            }
            ["listen", channel] => {
                let opts = SubscribeOptions {
                    last_seen_id: last_seen,
                    include_history: false,
                };
                match client.subscribe(channel, opts).await {
                    Ok(s) => eprintln!(
                        "subscribed to {} (recovered: {}); waiting for messages",
                        s.channel, s.recovered
                    ),
                    Err(e) => return fail(e),
                }
                let mut seen = 0;
                while let Some(ev) = events.next().await {
                    if let Event::Message(m) = ev {
                        println!(
                            "#{} [{}] {} from {}: {}",
                            m.id, m.msg_type, m.channel, m.sender.user_id, m.payload
                        );
                        let _ = client.ack(&m.channel, m.id).await;
                        seen += 1;
                        if count.is_some_and(|c| seen >= c) {
                            break;
                        }
                    }
                }
            }
            ["publish", channel, json] => {
                let payload: serde_json::Value = match serde_json::from_str(json) {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("payload is not JSON: {e}");
                        return 2;
                    }
                };
                let mut p =
                    Publish::new(*channel, kind.unwrap_or_else(|| "general".into()), payload);
                p.event = event;
                if let Some(pr) = priority {
                    p.priority = match pr.as_str() {
                        "low" => Priority::Low,
                        "high" => Priority::High,
                        "critical" => Priority::Critical,
                        "emergency" => Priority::Emergency,
                        _ => Priority::Normal,
                    };
                }
                match client.publish(&p).await {
                    Ok(r) => println!(
                        "published #{} (delivered {}, queued {})",
                        r.id, r.delivered_count, r.queued_count
                    ),
                    Err(e) => return fail(e),
                }
            }
            _ => usage(),
        }
        client.close().await;
        0
    });
    exit(code)
}
