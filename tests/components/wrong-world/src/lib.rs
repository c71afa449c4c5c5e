//! A valid component that does not fit pitstop's `service` world: it imports
//! an interface the platform does not provide and exports no handler.

wit_bindgen::generate!({
    inline: "
        package test:wrong;
        interface nowhere { ping: func(); }
        world wrong {
            import nowhere;
            export run: func() -> u32;
        }
    ",
});

struct Wrong;

impl Guest for Wrong {
    fn run() -> u32 {
        test::wrong::nowhere::ping();
        1
    }
}

export!(Wrong);
