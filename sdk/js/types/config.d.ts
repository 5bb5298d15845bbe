export function get(key: string): string | undefined;
export function require(key: string): string;
export function getNumber(key: string): number;
export function getBool(key: string): boolean;
