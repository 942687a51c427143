// Message catalogs: one JSON file per language (web/src/i18n/<lang>.json), fetched from the
// gateway. English is the fallback for a key a partial catalog lacks. A translator adds a
// language by adding its file and its name to LANGUAGES; no code changes.
export const LANGUAGES = { en: "English", vi: "Tiếng Việt" };
export const COMPLETE = ["en", "vi"];
let catalog = {};
let fallback = {};
export let language = "en";

async function fetchCatalog(lang) {
  const response = await fetch(`i18n-${lang}.json`, { credentials: "omit" });
  if (!response.ok) throw new Error(`no catalog for ${lang}`);
  return response.json();
}

export async function setLanguage(lang) {
  const chosen = Object.hasOwn(LANGUAGES, lang) ? lang : "en";
  if (!Object.keys(fallback).length) fallback = await fetchCatalog("en");
  catalog = chosen === "en" ? fallback : await fetchCatalog(chosen);
  language = chosen;
  document.documentElement.lang = chosen;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  }
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
    el.setAttribute("placeholder", t(el.dataset.i18nPlaceholder));
  }
}

export function t(key, vars = {}) {
  const template = catalog[key] ?? fallback[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

export function formatTime(ms) {
  return new Intl.DateTimeFormat(language, { dateStyle: "medium", timeStyle: "short" })
    .format(new Date(ms));
}
