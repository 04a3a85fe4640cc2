//! A small blocking HTTP/1.1 test client that keeps its connection alive and
//! understands Content-Length, chunked and read-to-close bodies. It states
//! exactly what goes on the wire, which curl cannot always do.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `x-backend` header the echo backend sets.
    pub fn backend(&self) -> String {
        self.header("x-backend").unwrap_or("").to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A keep-alive connection.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        Self::from_stream(stream)
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Client> {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map(Self::from_stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let writer = stream.try_clone().expect("clone");
        Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
        }
    }

    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.request("GET", host, path, &[], None).expect("request")
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Sends a request with optional body (Content-Length) and reads the response.
    pub fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Response> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        head.push_str("\r\n");
        self.writer.write_all(head.as_bytes())?;
        if let Some(b) = body {
            self.writer.write_all(b)?;
        }
        self.read_response(method == "HEAD")
    }

    /// Reads one response from the connection.
    pub fn read_response(&mut self, head_only: bool) -> std::io::Result<Response> {
        loop {
            let resp = read_one(&mut self.reader, head_only)?;
            if resp.status >= 200 || resp.status == 101 {
                return Ok(resp);
            }
        }
    }

    /// Whether the server closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let _ = self
            .reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(3)));
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }

    pub fn writer(&mut self) -> &mut TcpStream {
        &mut self.writer
    }
}

fn io_err(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_one(r: &mut impl BufRead, head_only: bool) -> std::io::Result<Response> {
    let status_line = read_line(r)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io_err(&format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| io_err("bad header"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status < 200 || status == 204 || status == 304 {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let size_line = read_line(r)?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).map_err(|_| io_err("bad chunk size"))?;
            if size == 0 {
                while !read_line(r)?.is_empty() {}
                break;
            }
            let start = resp.body.len();
            resp.body.resize(start + size, 0);
            r.read_exact(&mut resp.body[start..])?;
            read_line(r)?;
        }
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().map_err(|_| io_err("bad content-length"))?;
        resp.body.resize(len, 0);
        r.read_exact(&mut resp.body)?;
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// Parses one complete response held in memory.
pub fn parse_full_response(raw: &[u8]) -> Option<Response> {
    let mut cursor = std::io::Cursor::new(raw);
    read_one(&mut cursor, false).ok()
}
