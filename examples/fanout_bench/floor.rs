//! The floor: one thread writing a round's five messages to N loopback sockets, one
//! write per socket, while another process reads them; what the kernel alone costs
//! for a round. Its sockets stay open for the whole run, so floor rounds can be
//! measured between the server's rounds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The argument that makes this executable the floor's reading process.
pub const READER_FLAG: &str = "--floor-reader";

/// The writing side of the floor, with its reader running.
pub struct Floor {
    reader: Child,
    control: TcpStream,
    sockets: Vec<TcpStream>,
    payload: Vec<u8>,
}

impl Floor {
    /// Starts the reader for `n` sockets that each get `payload` per round, and
    /// connects to it. Blocking.
    pub fn start(n: usize, payload: Vec<u8>) -> anyhow::Result<Self> {
        let mut reader = Command::new(std::env::current_exe()?)
            .args([READER_FLAG, &n.to_string(), &payload.len().to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut port = String::new();
        BufReader::new(reader.stdout.take().context("reader stdout")?).read_line(&mut port)?;
        let addr: SocketAddr = ([127, 0, 0, 1], port.trim().parse()?).into();
        let control = TcpStream::connect(addr)?;
        let sockets: Vec<TcpStream> = (0..n)
            .map(|_| TcpStream::connect(addr))
            .collect::<Result<_, _>>()
            .context("connecting the floor's sockets")?;
        for socket in &sockets {
            socket.set_nodelay(true)?;
        }
        Ok(Self {
            reader,
            control,
            sockets,
            payload,
        })
    }

    /// One round: from the start of writing until the reader has read every socket's
    /// payload. Blocking.
    pub fn round(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        for socket in &mut self.sockets {
            socket.write_all(&self.payload)?;
        }
        let mut ack = [0u8; 1];
        self.control
            .read_exact(&mut ack)
            .context("the floor's reader stopped")?;
        Ok(started.elapsed())
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // Closing the sockets ends the reader.
        self.sockets.clear();
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        let _ = self.reader.wait();
    }
}

/// The reading process: accepts a control connection and `n` data connections, then
/// per round reads `bytes` from each in turn and acknowledges, until the writer
/// closes them.
pub fn reader(n: usize, bytes: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let (mut control, _) = listener.accept()?;
    let mut sockets: Vec<TcpStream> = (0..n)
        .map(|_| listener.accept().map(|(s, _)| s))
        .collect::<Result<_, _>>()?;
    let mut buffer = vec![0u8; bytes];
    loop {
        for socket in &mut sockets {
            if socket.read_exact(&mut buffer).is_err() {
                return Ok(());
            }
        }
        control.write_all(b"k")?;
    }
}

/// A round's messages as the server frames them: `messages` unmasked text frames
/// of `message_len` bytes each.
pub fn round_payload(messages: usize, message_len: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    for _ in 0..messages {
        payload.push(0x81);
        if message_len < 126 {
            payload.push(message_len as u8);
        } else {
            payload.push(126);
            payload.extend_from_slice(&(message_len as u16).to_be_bytes());
        }
        payload.extend(std::iter::repeat_n(b'x', message_len));
    }
    payload
}
