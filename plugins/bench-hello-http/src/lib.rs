//! `bench-hello-http`: a `wasi:http/proxy` component that answers every
//! request with 200 and a short body. It is not an evos plugin (it has no
//! manifest): the HTTP benchmark serves it with `wasmtime serve` as the
//! baseline that evos' invoke endpoint is compared against.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const BODY: &[u8] = b"hello";

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::new();
        // The length is known: no chunked encoding, as for the other servers.
        let _ = headers.set("content-length", &[BODY.len().to_string().into_bytes()]);
        let response = OutgoingResponse::new(headers);
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(out) = body.write() {
            let _ = out.blocking_write_and_flush(BODY);
        }
        let _ = OutgoingBody::finish(body, None);
    }
}

wasi::http::proxy::export!(Hello);
