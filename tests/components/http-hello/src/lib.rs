//! `wasi:http/proxy` hello: answers every request with the constant the
//! `hello` component answers, for `wasmtime serve` in `bench/run`.

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[("content-type".into(), b"application/json".to_vec())])
            .expect("a valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("the stream is taken once");
        out.blocking_write_and_flush(br#"{"hello":"world"}"#).expect("writing the body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}

wasip2::http::proxy::export!(Hello);
