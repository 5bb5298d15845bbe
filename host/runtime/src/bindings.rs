//! Host bindings generated from `wit/`, the one source of truth shared with
//! the SDK. The `host` world is the union of the four plugin worlds; each
//! plugin only ever has the export interface of its own kind loaded, and only
//! the imports its manifest grants linked. Generated code stays private to the
//! crate; the public API speaks [`crate::types`].

wasmtime::component::bindgen!({
    world: "evos:plugin/host",
    path: "../../wit",
    imports: { default: async },
    exports: { default: async },
    ownership: Borrowing { duplicate_if_necessary: true },
});
