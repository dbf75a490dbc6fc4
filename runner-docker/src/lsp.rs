//! A language server's `processId`, made true inside the container. An editor's
//! `initialize` request names the editor's pid; servers built on
//! vscode-languageserver-node check it every 3 s with `kill(pid, 0)` and exit when it
//! is gone. In the container's pid namespace the editor's pid does not exist, so such
//! a server would exit 3 s after it started. The first message on a process's stdin,
//! when it is an LSP `initialize` request with a numeric `processId`, gets a pid of
//! the container that lives exactly as long as the session: the helper's (which
//! ends with its owner), or the container's init. Everything else passes untouched.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest header block looked at; a longer one passes untouched.
const MAX_HEADER: usize = 8 * 1024;
/// The largest `initialize` body rewritten; a larger one passes untouched.
const MAX_BODY: usize = 16 << 20;

/// Reads the first bytes of `from` and returns what to send first: the LSP
/// `initialize` request it begins with, its `processId` replaced by `pid`, or
/// whatever was read, unchanged, as soon as it cannot be one. The rest of `from`
/// follows as it is. An error of `from` ends the look with what was read.
pub(crate) async fn first_message<R: AsyncRead + Unpin>(from: &mut R, pid: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if !could_be_header(&buf) {
            return buf;
        }
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let Some(length) = content_length(&buf[..end]).filter(|n| *n <= MAX_BODY) else {
                return buf;
            };
            let total = end + 4 + length;
            while buf.len() < total {
                match from.read(&mut chunk).await {
                    Ok(0) | Err(_) => return buf,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let rest = buf.split_off(total);
            let mut out = rewrite(&buf[..end], &buf[end + 4..], pid).unwrap_or(buf);
            out.extend_from_slice(&rest);
            return out;
        }
        if buf.len() > MAX_HEADER {
            return buf;
        }
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return buf,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// True while `buf` may still be the start of an LSP header block (`Content-Length:`
/// or `Content-Type:` first, in any case).
fn could_be_header(buf: &[u8]) -> bool {
    const START: &[u8] = b"content-";
    let n = buf.len().min(START.len());
    buf[..n].eq_ignore_ascii_case(&START[..n])
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `Content-Length` of a header block.
fn content_length(header: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(header).ok()?;
    text.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// The message again with `processId` set to `pid`, when it is an `initialize`
/// request with a numeric one; other header lines are kept.
fn rewrite(header: &[u8], body: &[u8], pid: u32) -> Option<Vec<u8>> {
    let mut message: serde_json::Value = serde_json::from_slice(body).ok()?;
    if message.get("method")?.as_str()? != "initialize" {
        return None;
    }
    let id = message.get_mut("params")?.get_mut("processId")?;
    if !id.is_number() {
        return None;
    }
    *id = serde_json::Value::from(pid);
    let body = serde_json::to_vec(&message).ok()?;
    let text = std::str::from_utf8(header).ok()?;
    let mut out = Vec::with_capacity(header.len() + body.len() + 8);
    for line in text.split("\r\n") {
        let is_length = line
            .split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"));
        if is_length {
            out.extend_from_slice(format!("Content-Length: {}", body.len()).as_bytes());
        } else {
            out.extend_from_slice(line.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &str) -> Vec<u8> {
        format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    async fn first(input: &[u8]) -> Vec<u8> {
        let mut from = input;
        first_message(&mut from, 7).await
    }

    #[tokio::test]
    async fn initialize_gets_the_containers_pid() {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"processId":123456,"rootUri":null}}"#;
        let mut input = framed(body);
        input.extend_from_slice(b"Content-Length: 2\r\n\r\n{}");
        let out = first(&input).await;
        let text = String::from_utf8(out).unwrap();
        let (header, rest) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = header
            .trim_start_matches("Content-Length: ")
            .parse()
            .unwrap();
        let (body, after) = rest.split_at(length);
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["params"]["processId"], 7);
        assert_eq!(v["params"]["rootUri"], serde_json::Value::Null);
        // What came after the first message is kept, byte for byte.
        assert_eq!(after, "Content-Length: 2\r\n\r\n{}");
    }

    #[tokio::test]
    async fn anything_else_passes_untouched() {
        for input in [
            b"hello world\n".to_vec(),
            framed(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"processId":null}}"#),
            framed(r#"{"jsonrpc":"2.0","id":1,"method":"shutdown"}"#),
            framed("not json"),
            b"Content-Length: 10\r\n\r\nshort".to_vec(),
            b"Content-Type: x\r\nno length\r\n\r\n".to_vec(),
            Vec::new(),
        ] {
            assert_eq!(first(&input).await, input);
        }
    }
}
