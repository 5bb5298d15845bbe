// {{name}}: the records in a body, apart from the host: an object or an
// array of objects, each with a string "id". Throws an Error saying what
// is wrong otherwise.
export function records(body) {
  if (body === null || typeof body !== 'object') {
    throw new Error('expected a JSON object or an array of objects');
  }
  const items = Array.isArray(body) ? body : [body];
  return items.map((item, i) => {
    const id = item && typeof item === 'object' ? item.id : undefined;
    if (typeof id !== 'string' || id === '') throw new Error(`record ${i} has no string "id"`);
    return [id, item];
  });
}
