//! The HTTP/1.1 engine, driven with raw bytes over real sockets.

mod support;

use bytes::Bytes;
use http::{Request, Response};
use mist::{Connection, ResponseData};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{get, post, roundtrip, serve, start, text, Client};

/// Answers with what the engine made of the request head.
async fn describe(req: Request<Connection>) -> Response<ResponseData> {
    let headers: Vec<String> = req
        .headers()
        .iter()
        .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    text(
        200,
        format!(
            "{} {} {:?}\n{}",
            req.method(),
            req.uri(),
            req.version(),
            headers.join("\n")
        ),
    )
}

mod keep_alive {
    use super::*;

    #[tokio::test]
    async fn http11_connection_stays_open_for_many_requests() {
        let server = serve(describe).await;
        let mut client = Client::connect(&server).await;
        for i in 0..5 {
            client.send(get(&format!("/{i}"))).await;
            let resp = client.response().await;
            assert_eq!(resp.status, 200);
            assert!(resp
                .text()
                .starts_with(&format!("GET http://test/{i} HTTP/1.1")));
            assert!(!resp.closes());
        }
    }

    #[tokio::test]
    async fn http10_closes_by_default() {
        let server = serve(describe).await;
        let mut client = Client::connect(&server).await;
        client.send("GET /x HTTP/1.0\r\n\r\n").await;
        let resp = client.response().await;
        assert_eq!(resp.status, 200);
        assert!(resp.closes());
        assert!(client.is_closed().await);
    }

    #[tokio::test]
    async fn http10_keep_alive_is_honoured() {
        let server = serve(describe).await;
        let mut client = Client::connect(&server).await;
        for _ in 0..2 {
            client
                .send("GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .await;
            let resp = client.response().await;
            assert_eq!(resp.header("connection"), Some("keep-alive"));
        }
    }

    #[tokio::test]
    async fn request_connection_close_closes_after_response() {
        let server = serve(describe).await;
        let mut client = Client::connect(&server).await;
        client
            .send("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await;
        assert!(client.response().await.closes());
        assert!(client.is_closed().await);
    }

    #[tokio::test]
    async fn response_connection_close_closes_after_response() {
        let server = serve(|_req: Request<Connection>| async {
            Response::builder()
                .header("connection", "close")
                .body(ResponseData::from("bye"))
                .unwrap()
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send(get("/")).await;
        let resp = client.response().await;
        assert_eq!(resp.text(), "bye");
        assert_eq!(resp.all("connection"), ["close"]);
        assert!(client.is_closed().await);
    }

    /// An HTTP/1.0 client that asked for keep-alive gets one `connection`
    /// field, the close the handler asked for, not the engine's keep-alive.
    #[tokio::test]
    async fn response_connection_close_overrides_http10_keep_alive() {
        let server = serve(|_req: Request<Connection>| async {
            Response::builder()
                .header("connection", "Close")
                .body(ResponseData::from("bye"))
                .unwrap()
        })
        .await;
        let mut client = Client::connect(&server).await;
        client
            .send("GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let resp = client.response().await;
        assert_eq!(resp.text(), "bye");
        assert_eq!(resp.all("connection"), ["close"]);
        assert!(client.is_closed().await);
    }

    #[tokio::test]
    async fn idle_connection_closes_after_keep_alive_timeout() {
        let server =
            start(mist::new(describe).keep_alive_timeout(Duration::from_millis(100))).await;
        let mut client = Client::connect(&server).await;
        client.send(get("/")).await;
        assert_eq!(client.response().await.status, 200);
        // The server closes the idle connection by itself.
        assert!(client.is_closed().await);
    }

    #[tokio::test]
    async fn slow_head_is_cut_off_with_408() {
        let server =
            start(mist::new(describe).header_read_timeout(Duration::from_millis(200))).await;
        let mut client = Client::connect(&server).await;
        client.send("GET / HTTP/1.1\r\nHost: a\r\n").await;
        let resp = client.response().await;
        assert_eq!(resp.status, 408);
        assert!(resp.closes());
        assert!(client.is_closed().await);
    }

    #[tokio::test]
    async fn silent_new_connection_is_closed_after_header_timeout() {
        let server =
            start(mist::new(describe).header_read_timeout(Duration::from_millis(100))).await;
        let mut client = Client::connect(&server).await;
        assert!(client.is_closed().await);
    }
}

mod pipelining {
    use super::*;

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let server = serve(|req: Request<Connection>| async move {
            // The first request is the slowest: order must still hold.
            let delay = match req.uri().path() {
                "/1" => 60,
                "/2" => 20,
                _ => 0,
            };
            tokio::time::sleep(Duration::from_millis(delay)).await;
            text(200, req.uri().path().to_string())
        })
        .await;
        let mut client = Client::connect(&server).await;
        let mut batch = String::new();
        for i in 1..=20 {
            batch.push_str(&get(&format!("/{i}")));
        }
        client.send(batch).await;
        for i in 1..=20 {
            assert_eq!(client.response().await.text(), format!("/{i}"));
        }
    }

    #[tokio::test]
    async fn a_closing_response_survives_a_request_sent_after_it() {
        // The client pipelines a request while the one before it, which
        // closes the connection, is still being answered: the server
        // closes with that request unread in the kernel, and a close with
        // unread input resets the connection. The response must have been
        // sent before that, not left queued behind the reset.
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<()>();
        let go = Arc::new(tokio::sync::Notify::new());
        let release = Arc::clone(&go);
        let server = serve(move |req: Request<Connection>| {
            let started_tx = started_tx.clone();
            let go = Arc::clone(&go);
            async move {
                if req.uri().path() == "/first" {
                    let _ = started_tx.send(());
                    go.notified().await;
                }
                let mut resp = text(200, "first");
                resp.headers_mut()
                    .insert("connection", http::HeaderValue::from_static("close"));
                resp
            }
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send(get("/first")).await;
        started.recv().await.unwrap();
        client.send(get("/second")).await;
        release.notify_one();
        let resp = client.response().await;
        assert_eq!((resp.status, resp.text()), (200, "first"));
        assert!(resp.closes());
    }

    #[tokio::test]
    async fn a_response_after_a_long_stream_has_a_fresh_date() {
        // Responses answered back to back share one reading of the clock;
        // one that follows a stream must read it again.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let rx = Arc::new(Mutex::new(Some(rx)));
        let server = serve(move |req: Request<Connection>| {
            let rx = rx.lock().unwrap().take();
            async move {
                match (req.uri().path(), rx) {
                    ("/stream", Some(rx)) => {
                        let body = futures_util::stream::unfold(rx, |mut rx| async move {
                            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
                        });
                        Response::new(ResponseData::chunked_stream(body))
                    }
                    _ => text(200, "fast"),
                }
            }
        })
        .await;
        let mut client = Client::connect(&server).await;
        client
            .send(format!("{}{}", get("/stream"), get("/fast")))
            .await;
        tx.send(Bytes::from_static(b"a")).await.unwrap();
        async fn read_until(stream: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, what: &str) {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(seen).contains(what) {
                let n = tokio::time::timeout(support::SAFETY_TIMEOUT, stream.read(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&buf[..n]);
            }
        }
        let mut seen = Vec::new();
        read_until(&mut client.stream, &mut seen, "1\r\na\r\n").await;
        // Time has to pass for a date to go stale: this pause is what the
        // test is about, not a wait for the server.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let released = std::time::SystemTime::now();
        drop(tx);
        read_until(&mut client.stream, &mut seen, "fast").await;
        let text = String::from_utf8_lossy(&seen).to_string();
        let last_date = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("date: "))
            .unwrap();
        let date = httpdate::parse_http_date(last_date).unwrap();
        let age = released.duration_since(date).unwrap_or_default();
        assert!(
            age < Duration::from_secs(1),
            "the second response's date is {age:?} old"
        );
    }

    #[tokio::test]
    async fn pipelined_requests_with_bodies_stay_in_sync() {
        let server = serve(support::echo_handler).await;
        let mut client = Client::connect(&server).await;
        let mut batch = post("/", b"first");
        batch.extend_from_slice(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n");
        batch.extend_from_slice(&post("/", b"third"));
        client.send(batch).await;
        assert_eq!(client.response().await.text(), "first");
        assert_eq!(client.response().await.text(), "second");
        assert_eq!(client.response().await.text(), "third");
    }
}

mod heads {
    use super::*;

    #[tokio::test]
    async fn repeated_request_headers_arrive_in_order() {
        let server = serve(describe).await;
        let resp = roundtrip(
            &server,
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-B: b\r\nX-A: 2\r\nX-A: 3\r\n\r\n",
        )
        .await;
        let lines: Vec<&str> = resp
            .text()
            .lines()
            .filter(|l| l.starts_with("x-a="))
            .collect();
        assert_eq!(lines, ["x-a=1", "x-a=2", "x-a=3"]);
    }

    #[tokio::test]
    async fn non_utf8_header_value_reaches_handler_as_bytes() {
        let server = serve(|req: Request<Connection>| async move {
            let value = req.headers()["x-raw"].as_bytes().to_vec();
            Response::new(ResponseData::from(value))
        })
        .await;
        let resp = roundtrip(
            &server,
            &b"GET / HTTP/1.1\r\nHost: a\r\nX-Raw: caf\xe9 \xff\r\n\r\n"[..],
        )
        .await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, b"caf\xe9 \xff");
    }

    #[tokio::test]
    async fn host_fills_authority_and_query_is_untouched() {
        let server = serve(describe).await;
        let resp = roundtrip(
            &server,
            "GET /a%20b/c?x=1+2&y=%2F&&z HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
        )
        .await;
        assert!(
            resp.text()
                .starts_with("GET http://example.com:8080/a%20b/c?x=1+2&y=%2F&&z HTTP/1.1"),
            "{}",
            resp.text()
        );
    }

    #[tokio::test]
    async fn each_request_on_a_connection_gets_its_own_host() {
        // The engine reuses the parsed Host of the previous request when it
        // repeats: a different one, pipelined or not, must not be mixed up.
        let server = serve(describe).await;
        let mut client = Client::connect(&server).await;
        client
            .send(
                "GET /1 HTTP/1.1\r\nHost: a.example:1\r\n\r\n\
                 GET /2 HTTP/1.1\r\nHost: a.example:1\r\n\r\n\
                 GET /3 HTTP/1.1\r\nHost: b.example:2\r\n\r\n\
                 GET /4 HTTP/1.1\r\nHost: a.example\r\n\r\n",
            )
            .await;
        for expected in [
            "GET http://a.example:1/1 ",
            "GET http://a.example:1/2 ",
            "GET http://b.example:2/3 ",
            "GET http://a.example/4 ",
        ] {
            let resp = client.response().await;
            assert!(resp.text().starts_with(expected), "{}", resp.text());
        }
        client
            .send("GET /5 HTTP/1.1\r\nHost: bad@host\r\n\r\n")
            .await;
        assert_eq!(client.response().await.status, 400);
    }

    #[tokio::test]
    async fn a_long_host_is_used_but_not_kept() {
        // Hosts over 255 bytes are parsed for each request, not cached.
        let long = format!("{}.example", "a".repeat(300));
        let server = serve(describe).await;
        let mut client = Client::connect(&server).await;
        for path in ["/1", "/2"] {
            client
                .send(format!("GET {path} HTTP/1.1\r\nHost: {long}\r\n\r\n"))
                .await;
            let resp = client.response().await;
            let expected = format!("GET http://{long}{path} ");
            assert!(resp.text().starts_with(&expected), "{}", resp.text());
        }
    }

    #[tokio::test]
    async fn a_response_header_never_shows_up_in_a_later_request() {
        // The engine reuses the header maps of written responses for the
        // requests it parses next: they must come back empty.
        let server = serve(|req: Request<Connection>| async move {
            let mut resp = describe(req).await;
            resp.headers_mut()
                .insert("x-from-response", http::HeaderValue::from_static("1"));
            resp
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send(format!("{}{}", get("/1"), get("/2"))).await;
        for _ in 0..2 {
            let resp = client.response().await;
            assert_eq!(resp.header("x-from-response"), Some("1"));
            assert!(!resp.text().contains("x-from-response"), "{}", resp.text());
        }
    }

    #[tokio::test]
    async fn absolute_form_target_is_kept() {
        let server = serve(describe).await;
        let resp = roundtrip(
            &server,
            "GET http://other.org:81/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
        )
        .await;
        assert!(
            resp.text()
                .starts_with("GET http://other.org:81/p?q HTTP/1.1"),
            "{}",
            resp.text()
        );
    }

    #[tokio::test]
    async fn a_connect_answered_with_a_2xx_gets_501_and_a_close() {
        // The handler sees CONNECT's authority-form target; its 200 would
        // tell the client the tunnel is open (RFC 9110 §9.3.6).
        let server = serve(describe).await;
        let mut client = Client::connect(&server).await;
        client
            .send("CONNECT a.org:443 HTTP/1.1\r\nHost: a.org:443\r\n\r\n")
            .await;
        let resp = client.response().await;
        assert_eq!(resp.status, 501);
        assert!(resp.closes());
        assert!(client.is_closed().await);
        // Nor is an event stream an answer to it.
        let server = serve(|req: Request<Connection>| async move {
            mist::server_sent_events(
                req,
                Response::new(()),
                || Ok::<_, String>(((), tokio::sync::mpsc::channel::<()>(1).1)),
                |_message, _conn, _state| mist::Next::Continue,
            )
        })
        .await;
        let resp = roundtrip(
            &server,
            "CONNECT a.org:443 HTTP/1.1\r\nHost: a.org:443\r\n\r\n",
        )
        .await;
        assert_eq!(resp.status, 501);
        // A refusal the handler chose goes out as it is.
        let server = serve(|_req: Request<Connection>| async { text(405, "no proxy here") }).await;
        let resp = roundtrip(
            &server,
            "CONNECT a.org:443 HTTP/1.1\r\nHost: a.org:443\r\n\r\n",
        )
        .await;
        assert_eq!((resp.status, resp.text()), (405, "no proxy here"));
    }

    #[tokio::test]
    async fn responses_carry_date_and_content_length() {
        let server = serve(support::fixed("Hello, world!")).await;
        let resp = roundtrip(&server, get("/")).await;
        assert_eq!(resp.header("content-length"), Some("13"));
        let date = resp.header("date").expect("date header");
        let parsed = httpdate_parse(date);
        let now = std::time::SystemTime::now();
        let skew = now.duration_since(parsed).unwrap_or_default();
        assert!(skew < Duration::from_secs(5), "date {date} is not now");
    }

    fn httpdate_parse(s: &str) -> std::time::SystemTime {
        // IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT"
        let parts: Vec<&str> = s.split(' ').collect();
        assert_eq!(parts.len(), 6, "{s}");
        assert_eq!(parts[5], "GMT");
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = months.iter().position(|m| *m == parts[2]).unwrap() as u64 + 1;
        let (day, year): (u64, u64) = (parts[1].parse().unwrap(), parts[3].parse().unwrap());
        let hms: Vec<u64> = parts[4].split(':').map(|p| p.parse().unwrap()).collect();
        // Days from civil (Howard Hinnant's algorithm).
        let (y, m) = if month <= 2 {
            (year - 1, month + 9)
        } else {
            (year, month - 3)
        };
        let era = y / 400;
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146097 + doe - 719468;
        std::time::UNIX_EPOCH
            + Duration::from_secs(days * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
    }

    #[tokio::test]
    async fn repeated_response_headers_all_go_out_in_order() {
        let server = serve(|_req: Request<Connection>| async {
            Response::builder()
                .header("set-cookie", "a=1")
                .header("set-cookie", "b=2")
                .header("set-cookie", "c=3")
                .body(ResponseData::empty())
                .unwrap()
        })
        .await;
        let resp = roundtrip(&server, get("/")).await;
        assert_eq!(resp.all("set-cookie"), ["a=1", "b=2", "c=3"]);
    }

    #[tokio::test]
    async fn head_response_has_length_but_no_body() {
        let server = serve(support::fixed("Hello, world!")).await;
        let mut client = Client::connect(&server).await;
        client.send("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let resp = client.head_response().await;
        assert_eq!(resp.header("content-length"), Some("13"));
        // The next response follows directly: no stray body bytes between.
        client.send(get("/")).await;
        assert_eq!(client.response().await.text(), "Hello, world!");
    }

    /// RFC 9110 §9.3.2: a HEAD handler need not build the body to say
    /// how long it would be.
    #[tokio::test]
    async fn a_bodiless_head_keeps_the_length_its_handler_declares() {
        let server = serve(|req: Request<Connection>| async move {
            let body = match req.method() == http::Method::HEAD {
                true => ResponseData::empty(),
                false => ResponseData::from(vec![b'x'; 1000]),
            };
            Response::builder()
                .header("content-length", "1000")
                .body(body)
                .unwrap()
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let resp = client.head_response().await;
        assert_eq!(resp.header("content-length"), Some("1000"));
        client.send(get("/")).await;
        assert_eq!(client.response().await.body.len(), 1000);
    }

    #[tokio::test]
    async fn no_content_and_not_modified_carry_no_body() {
        let server = serve(|req: Request<Connection>| async move {
            let status = if req.uri().path() == "/204" { 204 } else { 304 };
            Response::builder()
                .status(status)
                .body(ResponseData::from("ignored"))
                .unwrap()
        })
        .await;
        let mut client = Client::connect(&server).await;
        for path in ["/204", "/304"] {
            client.send(get(path)).await;
            let resp = client.response().await;
            assert_eq!(resp.status.to_string(), path[1..]);
            assert_eq!(resp.header("content-length"), None);
            assert!(resp.body.is_empty());
        }
        client.send(get("/204")).await;
        assert_eq!(client.response().await.status, 204);
    }

    #[tokio::test]
    async fn large_body_arrives_intact() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = big.clone();
        let body = Bytes::from(big);
        let server = serve(move |_req: Request<Connection>| {
            let body = body.clone();
            async move { Response::new(ResponseData::from(body)) }
        })
        .await;
        let mut client = Client::connect(&server).await;
        for _ in 0..2 {
            client.send(get("/")).await;
            assert!(client.response().await.body == expected);
        }
    }
}

/// Requests the engine refuses: a status, then the connection closes.
mod rejections {
    use super::*;

    async fn refused(raw: &[u8], status: u16) {
        let server = serve(describe).await;
        let mut client = Client::connect(&server).await;
        client.send(raw).await;
        let resp = client.response().await;
        assert_eq!(
            resp.status,
            status,
            "for {:?}: {}",
            String::from_utf8_lossy(raw),
            resp.text()
        );
        assert!(resp.closes());
        assert!(!resp.body.is_empty(), "error responses say what went wrong");
        assert!(client.is_closed().await);
    }

    #[tokio::test]
    async fn malformed_request_line_is_400() {
        refused(b"GET\r\n\r\n", 400).await;
        refused(b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400).await;
        refused(b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n", 400).await;
    }

    #[tokio::test]
    async fn malformed_header_is_400() {
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400).await;
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A : x\r\n\r\n", 400).await;
    }

    #[tokio::test]
    async fn obs_fold_is_400() {
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400).await;
    }

    #[tokio::test]
    async fn missing_or_repeated_host_is_400() {
        refused(b"GET / HTTP/1.1\r\n\r\n", 400).await;
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400).await;
    }

    #[tokio::test]
    async fn head_over_limit_is_431() {
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "a".repeat(70 * 1024)
        );
        refused(raw.as_bytes(), 431).await;
    }

    #[tokio::test]
    async fn too_many_headers_is_431() {
        let fields: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
        refused(
            format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n").as_bytes(),
            431,
        )
        .await;
    }

    #[tokio::test]
    async fn long_target_is_414() {
        refused(
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "x".repeat(10_000)).as_bytes(),
            414,
        )
        .await;
    }

    #[tokio::test]
    async fn unsupported_version_is_505() {
        refused(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505).await;
        refused(b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505).await;
    }

    #[tokio::test]
    async fn hrs_transfer_encoding_with_content_length_is_400() {
        refused(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400).await;
    }

    #[tokio::test]
    async fn hrs_differing_content_lengths_are_400() {
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            400,
        )
        .await;
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
            400,
        )
        .await;
    }

    #[tokio::test]
    async fn hrs_malformed_content_length_is_400() {
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
            400,
        )
        .await;
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello",
            400,
        )
        .await;
    }

    #[tokio::test]
    async fn hrs_transfer_coding_other_than_final_chunked_is_400() {
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
        )
        .await;
        refused(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            400,
        )
        .await;
        refused(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400).await;
    }

    /// Found by `scripts/smuggle-probe`: a fragment the `http` crate
    /// dropped (`/admin#x` served as `/admin`), userinfo, a port that is no
    /// number, and a CONNECT target that is no `host:port`.
    #[tokio::test]
    async fn hrs_targets_and_hosts_a_proxy_could_read_otherwise_are_400() {
        for raw in [
            &b"GET /hello#frag HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET http://u:p@a/hello HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n",
            b"CONNECT /hello HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            refused(raw, 400).await;
        }
    }

    /// Found by `scripts/smuggle-probe`: a NUL in a chunk extension, and
    /// trailer lines that are no field lines (here a request line), were
    /// skipped; a proxy that reads them otherwise frames the body
    /// differently.
    #[tokio::test]
    async fn hrs_malformed_chunk_extensions_and_trailers_are_400() {
        let server = serve(support::echo_handler).await;
        for body in [
            &b"5;a\x00b\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n",
        ] {
            let mut client = Client::connect(&server).await;
            client
                .send(
                    [
                        &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                        body,
                    ]
                    .concat(),
                )
                .await;
            let resp = client.response().await;
            assert_eq!(resp.status, 400, "{:?}", String::from_utf8_lossy(body));
            assert!(resp.closes());
            assert!(client.is_closed().await);
        }
    }

    #[tokio::test]
    async fn hrs_bad_chunk_framing_does_not_desync() {
        let server = serve(support::echo_handler).await;
        let mut client = Client::connect(&server).await;
        // A bare LF after the chunk data: the body is malformed, and the
        // "request" smuggled behind it must never be answered.
        client
            .send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n")
            .await;
        let resp = client.response().await;
        assert_eq!(resp.status, 400);
        assert!(resp.closes());
        assert!(client.is_closed().await);
    }
}

mod expect_continue {
    use super::*;

    #[tokio::test]
    async fn continue_is_sent_when_the_handler_reads_the_body() {
        let server = serve(support::echo_handler).await;
        let mut client = Client::connect(&server).await;
        client
            .send("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            .await;
        // The client waits for 100 Continue before sending its body.
        let interim = client.response().await;
        assert_eq!(interim.status, 100);
        client.send("hello").await;
        let resp = client.response().await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.text(), "hello");
    }

    #[tokio::test]
    async fn no_continue_when_the_handler_answers_without_reading() {
        let server = serve(|_req: Request<Connection>| async { text(403, "no") }).await;
        let mut client = Client::connect(&server).await;
        client
            .send("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            .await;
        let resp = client.response().await;
        assert_eq!(
            resp.status, 403,
            "the final response comes first, with no 100 before it"
        );
        assert!(resp.closes());
    }
}

mod unread_bodies {
    use super::*;

    #[tokio::test]
    async fn small_unread_body_is_drained_and_connection_reused() {
        let server = serve(support::fixed("ignored your body")).await;
        let mut client = Client::connect(&server).await;
        client.send(post("/", &[b'x'; 10_000])).await;
        let first = client.response().await;
        assert!(!first.closes());
        client
            .send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n")
            .await;
        assert_eq!(client.response().await.text(), "ignored your body");
        client.send(get("/")).await;
        assert_eq!(client.response().await.status, 200);
    }

    #[tokio::test]
    async fn large_unread_body_closes_the_connection() {
        let server = start(mist::new(support::fixed("no")).max_discard(1000)).await;
        let mut client = Client::connect(&server).await;
        client.send(post("/", &[b'x'; 5000])).await;
        let resp = client.response().await;
        assert_eq!(resp.text(), "no");
        assert!(resp.closes());
        assert!(client.is_closed().await);
    }
}

mod panics {
    use super::*;

    #[tokio::test]
    async fn panicking_handler_costs_one_request() {
        let server = serve(|req: Request<Connection>| async move {
            if req.uri().path() == "/panic" {
                panic!("handler panics on purpose");
            }
            text(200, "fine")
        })
        .await;
        let mut other = Client::connect(&server).await;
        other.send(get("/")).await;
        assert_eq!(other.response().await.text(), "fine");

        let mut client = Client::connect(&server).await;
        client.send(get("/panic")).await;
        let resp = client.response().await;
        assert_eq!(resp.status, 500);
        assert!(resp.closes());
        assert!(client.is_closed().await);

        // The already open connection and new ones carry on.
        other.send(get("/")).await;
        assert_eq!(other.response().await.text(), "fine");
        assert_eq!(roundtrip(&server, get("/")).await.text(), "fine");
    }

    #[tokio::test]
    async fn handler_panicking_before_its_future_costs_one_request() {
        #[allow(unreachable_code)]
        fn eager(_req: Request<Connection>) -> std::future::Ready<Response<ResponseData>> {
            panic!("panics while making its future");
        }
        let server = serve(eager).await;
        assert_eq!(roundtrip(&server, get("/")).await.status, 500);
        assert_eq!(roundtrip(&server, get("/")).await.status, 500);
    }
}

mod chunked_responses {
    use super::*;
    use futures_util::stream;

    #[tokio::test]
    async fn iterator_chunks_go_out_chunked() {
        let server = serve(|_req: Request<Connection>| async {
            Response::new(ResponseData::chunked(["one", "two", "three"]))
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send(get("/")).await;
        let resp = client.response().await;
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
        assert_eq!(resp.header("content-length"), None);
        assert_eq!(resp.text(), "onetwothree");
        // And the connection is still usable.
        client.send(get("/")).await;
        assert_eq!(client.response().await.text(), "onetwothree");
    }

    #[tokio::test]
    async fn each_chunk_is_flushed_while_the_stream_waits() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let rx = Arc::new(Mutex::new(Some(rx)));
        let server = serve(move |_req: Request<Connection>| {
            let rx = rx.lock().unwrap().take().unwrap();
            async move {
                let body = stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
                });
                Response::new(ResponseData::chunked_stream(body))
            }
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send(get("/")).await;
        tx.send(Bytes::from_static(b"first")).await.unwrap();
        // The first chunk arrives while the stream is still open.
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("5\r\nfirst\r\n") {
            use tokio::io::AsyncReadExt;
            let n = client.stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
        drop(tx);
    }

    #[tokio::test]
    async fn failing_stream_ends_without_last_chunk() {
        let server = serve(|_req: Request<Connection>| async {
            let chunks = stream::iter(vec![
                Ok(Bytes::from_static(b"partial")),
                Err(std::io::Error::other("backend went away")),
            ]);
            Response::new(ResponseData::chunked_stream(chunks))
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send(get("/")).await;
        let raw = String::from_utf8(client.read_to_close().await).unwrap();
        assert!(raw.contains("7\r\npartial\r\n"), "{raw}");
        assert!(
            !raw.ends_with("0\r\n\r\n"),
            "a failed stream must not look complete: {raw}"
        );
    }

    #[tokio::test]
    async fn http10_client_gets_body_until_close() {
        let server = serve(|_req: Request<Connection>| async {
            Response::new(ResponseData::chunked(["a", "b"]))
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send("GET / HTTP/1.0\r\n\r\n").await;
        let raw = String::from_utf8(client.read_to_close().await).unwrap();
        assert!(!raw.contains("transfer-encoding"), "{raw}");
        assert!(raw.ends_with("\r\n\r\nab"), "{raw}");
    }

    /// A stream with the length its handler declares in `content-length`
    /// (a proxy passing on its upstream's): chunks of varied sizes, one
    /// over the engine's copy threshold.
    fn declared(declared: &'static str, pieces: &[usize]) -> Response<ResponseData> {
        let chunks: Vec<Result<Bytes, std::io::Error>> = pieces
            .iter()
            .enumerate()
            .map(|(i, &len)| Ok(Bytes::from(vec![b'a' + i as u8; len])))
            .collect();
        Response::builder()
            .header("content-length", declared)
            .body(ResponseData::chunked_stream(stream::iter(chunks)))
            .unwrap()
    }

    fn expected(pieces: &[usize]) -> Vec<u8> {
        pieces
            .iter()
            .enumerate()
            .flat_map(|(i, &len)| vec![b'a' + i as u8; len])
            .collect()
    }

    #[tokio::test]
    async fn a_stream_with_a_declared_length_goes_out_unframed_with_it() {
        const PIECES: &[usize] = &[3, 100_000, 5];
        let server = serve(|_req: Request<Connection>| async { declared("100008", PIECES) }).await;
        let mut client = Client::connect(&server).await;
        for version in ["1.1", "1.0"] {
            client
                .send(format!(
                    "GET / HTTP/{version}\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
                ))
                .await;
            let resp = client.response().await;
            assert_eq!(resp.header("content-length"), Some("100008"));
            assert_eq!(resp.header("transfer-encoding"), None);
            assert!(resp.body == expected(PIECES));
            // Framed by its length, the connection carries on (HTTP/1.0
            // too, where a stream would otherwise run until close).
            assert!(!resp.closes(), "HTTP/{version}");
        }
        client.send("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert_eq!(
            client.head_response().await.header("content-length"),
            Some("100008")
        );
        client.send(get("/")).await;
        assert!(client.response().await.body == expected(PIECES));
    }

    #[tokio::test]
    async fn a_stream_longer_than_declared_is_cut_there_and_the_connection_closed() {
        let server = serve(|_req: Request<Connection>| async { declared("5", &[3, 4, 2]) }).await;
        let mut client = Client::connect(&server).await;
        client.send(get("/")).await;
        let resp = client.response().await;
        assert_eq!(resp.header("content-length"), Some("5"));
        assert_eq!(resp.body, b"aaabb");
        assert!(
            client.is_closed().await,
            "nothing after the declared length"
        );
    }

    #[tokio::test]
    async fn a_stream_shorter_than_declared_resets_the_connection() {
        use tokio::io::AsyncReadExt;
        let server = serve(|_req: Request<Connection>| async { declared("20", &[3, 4]) }).await;
        let mut client = Client::connect(&server).await;
        client.send(get("/")).await;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            match client.stream.read(&mut buf).await {
                Ok(0) => break None,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(err) => break Some(err.kind()),
            }
        };
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("content-length: 20\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\naaabbbb"), "the 7 bytes: {text}");
        assert_eq!(
            end,
            Some(std::io::ErrorKind::ConnectionReset),
            "a reset, not a clean end that could pass for a whole body"
        );
    }

    /// A stream that has given its declared length is not waited for: a
    /// proxy's upstream may stay open, a channel's sender be kept. The
    /// next request is answered; an error after the last byte does not
    /// spoil the whole response either.
    #[tokio::test]
    async fn a_stream_that_reached_its_declared_length_is_not_waited_for() {
        type Rest = Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send + Unpin>;
        let server = serve(|req: Request<Connection>| async move {
            let then: Rest = match req.uri().path() {
                "/pending" => Box::new(stream::pending()),
                "/error" => Box::new(stream::iter([Err(std::io::Error::other("late"))])),
                _ => return text(200, "next"),
            };
            let first: std::io::Result<Bytes> = Ok(Bytes::from_static(b"hello"));
            let body = futures_util::StreamExt::chain(stream::iter([first]), then);
            Response::builder()
                .header("content-length", "5")
                .body(ResponseData::chunked_stream(body))
                .unwrap()
        })
        .await;
        let mut client = Client::connect(&server).await;
        for path in ["/pending", "/error"] {
            client.send(format!("{}{}", get(path), get("/next"))).await;
            let resp = client.response().await;
            assert_eq!(
                (resp.status, &resp.body[..]),
                (200, &b"hello"[..]),
                "{path}"
            );
            assert!(!resp.closes(), "{path}");
            assert_eq!(client.response().await.text(), "next", "{path}");
        }
    }

    #[tokio::test]
    async fn a_declared_length_of_zero_sends_no_body() {
        let server = serve(|req: Request<Connection>| async move {
            match req.uri().path() {
                "/empty" => Response::builder()
                    .header("content-length", "0")
                    .body(ResponseData::chunked_stream(stream::pending::<
                        std::io::Result<Bytes>,
                    >()))
                    .unwrap(),
                _ => text(200, "next"),
            }
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send(get("/empty")).await;
        let resp = client.response().await;
        assert_eq!(resp.header("content-length"), Some("0"));
        assert!(resp.body.is_empty());
        client.send(get("/next")).await;
        assert_eq!(client.response().await.text(), "next");
    }

    #[tokio::test]
    async fn an_invalid_declared_length_on_a_stream_is_replaced_by_chunking() {
        for bad in ["+5", "5, 5", "", "99999999999999999999999"] {
            let server = serve(move |_req: Request<Connection>| async move {
                let mut response = declared("5", &[2, 3]);
                response
                    .headers_mut()
                    .insert("content-length", bad.parse().unwrap());
                response
            })
            .await;
            let mut client = Client::connect(&server).await;
            client.send(get("/")).await;
            let resp = client.response().await;
            assert_eq!(resp.header("transfer-encoding"), Some("chunked"), "{bad:?}");
            assert_eq!(resp.header("content-length"), None, "{bad:?}");
            assert_eq!(resp.body, b"aabbb");
        }
    }

    #[tokio::test]
    async fn head_of_chunked_response_has_no_body() {
        let server = serve(|_req: Request<Connection>| async {
            Response::new(ResponseData::chunked(["a", "b"]))
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let resp = client.head_response().await;
        assert_eq!(resp.status, 200);
        client.send(get("/")).await;
        assert_eq!(client.response().await.text(), "ab");
    }
}

mod hardening {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn huge_declared_length_with_no_limit_does_not_reserve_it() {
        let server = serve(|req: Request<Connection>| async move {
            match mist::read_body(req, usize::MAX).await {
                Ok(req) => text(200, req.body().len().to_string()),
                Err(err) => text(400, err.to_string()),
            }
        })
        .await;
        let mut client = Client::connect(&server).await;
        client
            .send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4398046511104\r\n\r\na")
            .await;
        // Let the first piece be read on its own, then a second one.
        client.stream.flush().await.unwrap();
        tokio::task::yield_now().await;
        client.send("b").await;
        client.stream.shutdown().await.unwrap();
        assert_eq!(client.response().await.status, 400);
        // The process is alive and serving.
        assert_eq!(roundtrip(&server, get("/")).await.status, 200);
    }

    #[tokio::test]
    async fn dripped_unread_body_cannot_hold_the_connection() {
        let server = start(
            mist::new(support::fixed("ignored")).body_read_timeout(Duration::from_millis(300)),
        )
        .await;
        let mut client = Client::connect(&server).await;
        client
            .send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nx")
            .await;
        assert_eq!(client.response().await.text(), "ignored");
        // One byte every 100 ms: each read is in time, the whole is not.
        let (mut reader, mut writer) = client.stream.into_split();
        let drip = tokio::spawn(async move {
            for _ in 0..600 {
                if writer.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(support::SAFETY_TIMEOUT, reader.read_to_end(&mut rest))
            .await
            .expect("the server closed the dripping connection");
        drip.abort();
    }

    #[tokio::test]
    async fn write_timeout_bounds_stalls_not_slow_steady_downloads() {
        let body = Bytes::from(vec![7u8; 8 << 20]);
        let server = start(
            mist::new(move |_req: Request<Connection>| {
                let body = body.clone();
                async move { Response::new(ResponseData::from(body)) }
            })
            .write_timeout(Duration::from_millis(1500)),
        )
        .await;
        let mut client = Client::connect(&server).await;
        client.send(get("/")).await;
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while total < 8 << 20 {
            let n = client.stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "download cut off after {total} bytes");
            total += n;
            // At most ~3 MB/s: the download takes longer than the write
            // timeout, while no single stall comes near it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn unlimited_timeouts_do_not_overflow() {
        let server = start(
            mist::new(support::echo_handler)
                .header_read_timeout(Duration::MAX)
                .keep_alive_timeout(Duration::MAX)
                .body_read_timeout(Duration::MAX)
                .write_timeout(Duration::MAX),
        )
        .await;
        let mut client = Client::connect(&server).await;
        client
            .send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel")
            .await;
        tokio::task::yield_now().await;
        client.send("lo").await;
        assert_eq!(client.response().await.text(), "hello");
    }

    #[tokio::test]
    async fn interim_status_from_handler_becomes_500() {
        let server = serve(|_req: Request<Connection>| async {
            Response::builder()
                .status(100)
                .body(ResponseData::empty())
                .unwrap()
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send(get("/")).await;
        let resp = client.response().await;
        assert_eq!(resp.status, 500);
        assert!(resp.closes());
    }

    #[tokio::test]
    async fn failing_stream_to_http10_client_resets_the_connection() {
        use futures_util::stream;
        let server = serve(|_req: Request<Connection>| async {
            let chunks = stream::iter(vec![
                Ok(Bytes::from_static(b"partial")),
                Err(std::io::Error::other("backend went away")),
            ]);
            Response::new(ResponseData::chunked_stream(chunks))
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send("GET / HTTP/1.0\r\n\r\n").await;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            match client.stream.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(err) => break Err(err.kind()),
            }
        };
        assert_eq!(
            end,
            Err(std::io::ErrorKind::ConnectionReset),
            "{:?}",
            String::from_utf8_lossy(&seen)
        );
    }

    #[tokio::test]
    async fn panicking_response_stream_costs_only_its_connection() {
        let server = serve(|req: Request<Connection>| async move {
            if req.uri().path() == "/boom" {
                let chunks = (0..3).map(|i| {
                    assert!(i < 1, "the stream panics on purpose");
                    "chunk"
                });
                return Response::new(ResponseData::chunked(chunks));
            }
            text(200, "fine")
        })
        .await;
        let mut client = Client::connect(&server).await;
        client.send(get("/boom")).await;
        let _ = client.read_to_close().await;
        assert_eq!(roundtrip(&server, get("/")).await.text(), "fine");
    }

    #[tokio::test]
    async fn read_request_body_handlers_know_the_client() {
        let builder = mist::new(|req: Request<Bytes>| async move {
            let info = req.extensions().get::<mist::ConnectionInfo>().copied();
            text(200, format!("{:?}", info.map(|i| i.ip_address)))
        })
        .read_request_body(100, Response::new(""));
        let server = start(builder).await;
        let resp = roundtrip(&server, post("/", b"x")).await;
        assert_eq!(resp.text(), "Some(V4(127, 0, 0, 1))");
    }
}
