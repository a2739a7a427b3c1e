// boneage web UI: upload a radiograph, show the assessment, record the reader's decision, list past ones.
// Plain browser JavaScript, no build step. Every value from the server is written with textContent.
"use strict";

const PAGE_SIZE = 10;
const state = { current: null, offset: 0, total: 0, objectUrls: {} };
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------------ helpers
function token() {
  return sessionStorage.getItem("boneage-token") || "";
}

function headers(extra) {
  const result = Object.assign({ "X-Boneage-Client": "ui" }, extra || {});
  if (token()) result.Authorization = "Bearer " + token();
  return result;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({}, options, { headers: headers((options || {}).headers) }));
  let body = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/json")) body = await response.json();
  if (!response.ok && !(response.status === 422 && body && body.assessment)) {
    const detail = body && body.detail ? body.detail : response.status + " " + response.statusText;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return { status: response.status, body };
}

// Images need the token too, so they are fetched and shown as object URLs.
async function showImage(element, url) {
  const response = await fetch(url, { headers: headers() });
  if (!response.ok) throw new Error("cannot load " + url + ": " + response.status);
  const blob = await response.blob();
  if (state.objectUrls[element.id]) URL.revokeObjectURL(state.objectUrls[element.id]);
  state.objectUrls[element.id] = URL.createObjectURL(blob);
  await new Promise((resolve) => {
    element.onload = resolve;
    element.onerror = resolve;
    element.src = state.objectUrls[element.id];
  });
  element.dataset.loaded = "true";
}

function setStatus(element, text, kind) {
  element.textContent = text;
  element.className = "status" + (kind ? " " + kind : "");
}

function formatAge(months) {
  if (months === null || months === undefined) return "";
  const total = Math.round(Number(months));
  const sign = total < 0 ? "-" : "";
  const years = Math.floor(Math.abs(total) / 12);
  const rest = Math.abs(total) % 12;
  return sign + years + (years === 1 ? " year " : " years ") + rest + (rest === 1 ? " month" : " months");
}

function fixed(value, digits) {
  return value === null || value === undefined ? "" : Number(value).toFixed(digits);
}

function monthsFrom(yearsInput, monthsInput) {
  const years = yearsInput.value.trim();
  const months = monthsInput.value.trim();
  if (!years && !months) return null;
  return (Number(years || 0) * 12) + Number(months || 0);
}

function describeDecision(decision, record) {
  if (!decision) return "no decision yet";
  const who = decision.reader ? " by " + decision.reader : "";
  const when = new Date(decision.created_at).toLocaleString();
  if (decision.decision === "accepted") {
    return "accepted " + formatAge(record.bone_age_months) + who + " (" + when + ")";
  }
  return "corrected to " + formatAge(decision.reader_bone_age_months) + " (" +
    fixed(decision.reader_bone_age_months, 1) + " months)" + who + " (" + when + ")";
}

// ------------------------------------------------------------------------------------------- result
function addRow(list, label, value, className) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.textContent = value;
  if (className) dd.className = className;
  list.append(dt, dd);
}

async function showRecord(record) {
  state.current = record;
  const result = record.result || {};
  $("result").hidden = false;
  $("result-id").textContent = record.id.slice(0, 8) + " · " + (record.image_filename || "");
  const boneAge = $("bone-age");
  const rejected = record.status === "rejected";
  boneAge.classList.toggle("rejected", rejected);
  boneAge.textContent = rejected
    ? "not estimated: " + (result.rejection || "the image was rejected")
    : formatAge(record.bone_age_months) + " (" + fixed(record.bone_age_months, 1) + " months)";

  const numbers = $("numbers");
  numbers.replaceChildren();
  const u = result.uncertainty;
  if (u) addRow(numbers, "95% interval", fixed(u.low_months, 1) + " to " + fixed(u.high_months, 1) + " months");
  else if (!rejected) addRow(numbers, "95% interval", "not given by this model (see notes)");
  const sexSource = result.sex_source === "dicom" ? " (from DICOM)"
    : result.sex_source === "predicted" ? ` (predicted from the radiograph, probability ${Number(result.sex_probability).toFixed(2)})` : "";
  addRow(numbers, "Sex", { M: "male", F: "female" }[record.sex] + sexSource);
  if (record.chronological_age_months !== null) {
    addRow(numbers, "Chronological age", formatAge(record.chronological_age_months) + " (" +
      fixed(record.chronological_age_months, 1) + " months)");
  }
  if (result.bone_age_minus_chronological_months !== null && result.bone_age_minus_chronological_months !== undefined) {
    const diff = result.bone_age_minus_chronological_months;
    addRow(numbers, "Bone age − chronological", (diff >= 0 ? "+" : "") + fixed(diff, 1) + " months");
  }
  if (record.sds !== null) {
    addRow(numbers, "SDS", (record.sds >= 0 ? "+" : "") + fixed(record.sds, 2));
    addRow(numbers, "Centile", fixed(result.centile, 1));
    addRow(numbers, "Reading", record.reading, "reading-" + String(record.reading || "").split(" ")[0]);
  } else if (!rejected) {
    addRow(numbers, "SDS", "not computed (see notes)");
  }
  if (result.height_cm !== null && result.height_cm !== undefined) addRow(numbers, "Height", fixed(result.height_cm, 1) + " cm");
  if (result.adult_height) {
    addRow(numbers, "Predicted adult height", fixed(result.adult_height.predicted_adult_height_cm, 1) + " cm (" +
      result.adult_height.method + ")");
  }
  $("model-line").textContent = "Model: " + record.model_name + " " + record.model_version;

  const statements = $("statements");
  statements.replaceChildren();
  for (const text of result.statements || []) {
    const item = document.createElement("li");
    item.textContent = text;
    statements.append(item);
  }
  showBones(result);
  const evidence = result.evidence || {};
  $("overlay-caption").textContent = rejected
    ? "The image as read; the model rejected it"
    : evidence.available
      ? "Evidence overlay: " + (evidence.label || "model evidence")
      : "Radiograph as read (this model offers no evidence overlay)";
  $("overlay-image").alt = evidence.available && !rejected ? "radiograph with the model's evidence overlay" : "radiograph";
  $("overlay-reason").hidden = !rejected;
  $("overlay-reason").textContent = rejected ? "Rejected: " + (result.rejection || "no bone age") : "";
  $("overlay-size").textContent = "";
  $("model-bone-age").textContent = rejected ? "no bone age (image rejected)" : formatAge(record.bone_age_months) +
    " (" + fixed(record.bone_age_months, 1) + " months)";
  $("accept").disabled = rejected;
  showDecisions(record);
  setStatus($("decision-status"), "");
  const image = $("overlay-image");
  const chart = $("chart-image");
  image.dataset.loaded = "";
  chart.dataset.loaded = "";
  await Promise.all([showImage(image, record.links.image), showImage(chart, record.links.chart)]);
  // the picture is the radiograph at its own resolution (at most 1024 px a side): say so, and open it whole
  if (image.naturalWidth) $("overlay-size").textContent = "(" + image.naturalWidth + " × " + image.naturalHeight + " px)";
  $("image-full").href = state.objectUrls[image.id] || record.links.image;
}

// a per-bone model's (RUS-CHN) bones: each bone's stage and score, the total and the RUS-CHN bone age
const BONE_NAMES = {
  Radius: "radius", Ulna: "ulna", MCPFirst: "1st metacarpal", MCPThird: "3rd metacarpal", MCPFifth: "5th metacarpal",
  PIPFirst: "1st proximal phalanx", PIPThird: "3rd proximal phalanx", PIPFifth: "5th proximal phalanx",
  MIPThird: "3rd middle phalanx", MIPFifth: "5th middle phalanx", DIPFirst: "1st distal phalanx",
  DIPThird: "3rd distal phalanx", DIPFifth: "5th distal phalanx",
};

function showBones(result) {
  const bones = Array.isArray(result.bones) ? result.bones : [];
  const summary = result.rus_chn || {};
  const rows = $("bone-rows");
  rows.replaceChildren();
  $("bones").hidden = bones.length === 0;
  for (const bone of bones) {
    const row = document.createElement("tr");
    const name = document.createElement("th");
    name.textContent = (BONE_NAMES[bone.name] || bone.name) + " (" + bone.name + ")";
    row.append(name);
    cell(row, bone.stage);
    cell(row, bone.score);
    rows.append(row);
  }
  $("bones-total").textContent = result.rus_chn_score === undefined ? "" : String(result.rus_chn_score);
  $("rus-chn-line").textContent = bones.length === 0 ? "" : "RUS-CHN bone age " + formatAge(summary.age_months) +
    " (Chinese standard); stages are numbered from 0. " + (summary.scale || "");
}

function showDecisions(record) {
  $("reader-decision").textContent = describeDecision(record.latest_decision, record);
  const list = $("decisions");
  list.replaceChildren();
  for (const decision of record.decisions || []) {
    const item = document.createElement("li");
    item.textContent = describeDecision(decision, record) + (decision.comment ? ": “" + decision.comment + "”" : "");
    list.append(item);
  }
  for (const row of $("history-rows").children) row.classList.toggle("current", row.dataset.id === record.id);
}

async function openRecord(id) {
  try {
    const { body } = await api("/api/assessments/" + encodeURIComponent(id));
    await showRecord(body);
  } catch (error) {
    setStatus($("upload-status"), error.message, "error");
  }
}

// ------------------------------------------------------------------------------------------- upload
function chooseFile(file) {
  const input = $("file");
  if (file) {
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
  }
  const chosen = input.files && input.files[0];
  $("dropzone").classList.toggle("chosen", Boolean(chosen));
  $("drop-text").textContent = chosen ? chosen.name + " (" + Math.round(chosen.size / 1024) + " KB)" : "Drop a radiograph here";
}

async function upload(event) {
  event.preventDefault();
  const status = $("upload-status");
  const file = $("file").files[0];
  if (!file) return setStatus(status, "Choose a radiograph first.", "error");
  const sex = $("sex").value;
  if (!sex) return setStatus(status, "Choose the sex (or 'from the DICOM file').", "error");
  const form = new FormData();
  form.append("image", file, file.name);
  if (sex !== "dicom") form.append("sex", sex);
  const age = monthsFrom($("age-years"), $("age-months"));
  if (age !== null) form.append("chronological_age_months", String(age));
  if ($("height").value.trim()) form.append("height_cm", $("height").value.trim());
  $("submit").disabled = true;
  setStatus(status, "Assessing...");
  try {
    const { status: code, body } = await api("/api/assessments", { method: "POST", body: form });
    const record = code === 422 ? body.assessment : body;
    if (code === 422) setStatus(status, body.detail, "error");
    else setStatus(status, "Assessed: " + formatAge(record.bone_age_months) + ".", "ok");
    state.offset = 0;
    await Promise.all([showRecord(record), loadHistory()]);
  } catch (error) {
    setStatus(status, error.message, "error");
  } finally {
    $("submit").disabled = false;
  }
}

// ----------------------------------------------------------------------------------------- decision
async function decide(payload) {
  const status = $("decision-status");
  if (!state.current) return;
  const reader = $("reader-name").value.trim();
  if (reader) payload.reader = reader;
  try {
    const { body } = await api("/api/assessments/" + encodeURIComponent(state.current.id) + "/decision", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
    });
    state.current = body;
    showDecisions(body);
    setStatus(status, payload.decision === "accepted" ? "Accepted." : "Correction saved.", "ok");
    await loadHistory();
  } catch (error) {
    setStatus(status, error.message, "error");
  }
}

function correct(event) {
  event.preventDefault();
  const months = monthsFrom($("reader-years"), $("reader-months"));
  if (months === null) return setStatus($("decision-status"), "Enter your bone age (years and/or months).", "error");
  const payload = { decision: "corrected", reader_bone_age_months: months };
  const comment = $("reader-comment").value.trim();
  if (comment) payload.comment = comment;
  decide(payload);
}

async function openReport(event) {
  event.preventDefault();
  if (!state.current) return;
  const response = await fetch(state.current.links.report, { headers: headers() });
  if (!response.ok) return setStatus($("decision-status"), "The report could not be made: " + response.status, "error");
  const url = URL.createObjectURL(await response.blob());
  window.open(url, "_blank", "noopener");
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// ------------------------------------------------------------------------------------------ history
function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : text;
  row.append(td);
}

async function loadHistory() {
  try {
    const { body } = await api("/api/assessments?offset=" + state.offset + "&limit=" + PAGE_SIZE);
    state.total = body.total;
    const rows = $("history-rows");
    rows.replaceChildren();
    for (const item of body.items) {
      const row = document.createElement("tr");
      row.dataset.id = item.id;
      cell(row, new Date(item.created_at).toLocaleString());
      cell(row, item.image_filename);
      cell(row, item.sex);
      cell(row, item.chronological_age_months === null ? "" : formatAge(item.chronological_age_months));
      cell(row, item.status === "rejected" ? "rejected" : formatAge(item.bone_age_months));
      cell(row, item.sds === null ? "" : fixed(item.sds, 2));
      cell(row, item.reading);
      const decision = item.latest_decision;
      cell(row, !decision ? "" : decision.decision === "accepted" ? "accepted" : "corrected: " + formatAge(decision.reader_bone_age_months));
      row.classList.toggle("current", Boolean(state.current && state.current.id === item.id));
      row.addEventListener("click", () => openRecord(item.id));
      rows.append(row);
    }
    const first = body.total ? state.offset + 1 : 0;
    $("page-info").textContent = first + "–" + (state.offset + body.items.length) + " of " + body.total;
    $("previous-page").disabled = state.offset === 0;
    $("next-page").disabled = state.offset + PAGE_SIZE >= body.total;
  } catch (error) {
    $("page-info").textContent = error.message;
  }
}

// --------------------------------------------------------------------------------------------- start
async function start() {
  // listeners first: a file chosen while the health check is under way must not be missed
  const zone = $("dropzone");
  zone.addEventListener("click", (event) => {
    if (event.target !== $("file")) $("file").click();
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") $("file").click();
  });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer.files.length) chooseFile(event.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", () => chooseFile(null));
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("boneage-token", $("token").value.trim());
    loadHistory();
  });
  $("upload-form").addEventListener("submit", upload);
  $("accept").addEventListener("click", () => decide({ decision: "accepted" }));
  $("correct-form").addEventListener("submit", correct);
  $("report-link").addEventListener("click", openReport);
  $("previous-page").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); loadHistory(); });
  $("next-page").addEventListener("click", () => { state.offset += PAGE_SIZE; loadHistory(); });
  if ($("file").files && $("file").files.length) chooseFile(null);
  try {
    const response = await fetch("/api/health");
    const health = await response.json();
    $("model-info").textContent = "model " + health.model.name + " " + health.model.version;
    if (health.auth_required) {
      $("token-box").hidden = false;
      $("token").value = token();
    }
  } catch (error) {
    $("model-info").textContent = "service not reachable";
  }
  await loadHistory();
}

document.addEventListener("DOMContentLoaded", start);
