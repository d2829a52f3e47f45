// eslint for the page's JavaScript (serve/static): `make lint` runs it from serve/web
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    files: ["**/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "script", globals: globals.browser },
    rules: { "no-unused-vars": ["error", { caughtErrors: "none" }] },
  },
  {
    files: ["field.js", "outbox.js"],
    languageOptions: { sourceType: "module" },
  },
  {
    files: ["sw.js"],
    languageOptions: { globals: globals.serviceworker },
  },
];
