// The officer's record in IndexedDB: public facts (officer id, gateway, its pinned key,
// desks, public keys, partner keys pinned on first use) and the private keys sealed under
// the passphrase (crypto.lockKeys). Nothing secret is ever stored in the clear, and
// nothing at all goes to localStorage or cookies.
const DB = "fpg-webclient";
const STORE = "officer";
const KEY = "me";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function run(mode, action) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = action(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

export const load = () => run("readonly", (s) => s.get(KEY));
export const save = (record) => run("readwrite", (s) => s.put(record, KEY));
export const forget = () => run("readwrite", (s) => s.delete(KEY));
