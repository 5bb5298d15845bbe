export function get(key: string): Uint8Array | undefined;
export function set(key: string, value: Uint8Array): void;
export function del(key: string): boolean;
export function listKeys(prefix: string): string[];
export function getJson(key: string): unknown;
export function setJson(key: string, value: unknown): void;
