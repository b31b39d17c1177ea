"""Part H of the appendix: explorer.html, the trained model in a web page.

The first tests read the page as a file (the weights it embeds, that it asks for nothing on the
network, its size). The others open the page the tiny run wrote in a real headless Chromium,
with every network request refused, and compare what its JavaScript computes with PyTorch:
logits, probabilities after temperature / top-k / top-p, attention, and the characters its
Step and Write buttons write with a seed. Without a Chromium they skip with one line of reason
(Debian: apt install chromium; pip install playwright); where LLM_BROWSER_TESTS=required, as
in CI, they fail instead of skipping."""
import base64
import collections
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

import LLM
from conftest import PROVERBS, ROOT, one_line_error

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(os.environ.get("LLM_SCREENSHOTS", "/tmp/llm-explorer-screenshots"))


def page_data(path: Path) -> dict:
    """The JSON the page embeds (the script element explorer-data)."""
    html = path.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', html, re.S)
    return json.loads(found.group(1))


def unpacked(data: dict, epoch: dict) -> dict:
    """A state_dict from one epoch of the page: its base64 numbers, cut by the page's tensor list."""
    raw = base64.b64decode(epoch["weights"])
    dtype = torch.float32 if epoch["dtype"] == "float32" else torch.float16
    flat = torch.frombuffer(bytearray(raw), dtype=dtype).float()
    weights, offset = {}, 0
    for name, shape in data["tensors"]:
        size = int(torch.tensor(shape).prod()) if shape else 1
        weights[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    assert offset == len(flat)
    return weights


# --- the file ----------------------------------------------------------------------------------

def test_the_page_embeds_the_best_epoch_exactly_and_the_snapshots_at_half_precision(tiny_run):
    model, tokenizer, cfg, payload = LLM.load_checkpoint(tiny_run / "model.pt", "cpu")
    data = page_data(tiny_run / "explorer.html")
    assert data["tokenizer"]["vocabulary"] == [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)]
    assert data["model"] == {"vocab_size": tokenizer.vocab_size, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
                             "n_layers": cfg.n_layers, "d_ff": cfg.d_ff, "context": cfg.context, "without": []}
    assert [e["epoch"] for e in data["epochs"]] == [1, 2, 3]  # --snapshot 1, three epochs: every one fits
    best = [e for e in data["epochs"] if e["best"]]
    assert len(best) == 1 and best[0]["epoch"] == payload["epoch"] and best[0]["dtype"] == "float32"
    for name, tensor in model.state_dict().items():  # bit for bit what model.pt holds
        assert torch.equal(unpacked(data, best[0])[name], tensor), name
    for epoch in data["epochs"]:
        if not epoch["best"]:
            assert epoch["dtype"] == "float16"
            assert len(base64.b64decode(epoch["weights"])) == 2 * LLM.count_parameters(model)
            assert not torch.equal(unpacked(data, epoch)["lm_head.weight"], model.lm_head.weight)  # another epoch
    assert [r["epoch"] for r in data["history"]] == [1, 2, 3] and data["best_epoch"] == payload["epoch"]
    assert data["sampling"]["seed"] == cfg.seed and data["sampling"]["top_k"] == cfg.top_k


def test_the_page_is_one_file_that_asks_for_nothing(tiny_run):
    html = (tiny_run / "explorer.html").read_text(encoding="utf-8")
    assert "default-src 'none'" in html  # its Content-Security-Policy: the browser refuses any request
    assert not re.search(r"""\b(src|href)\s*=|url\(|@import|fetch\(|XMLHttpRequest|import\(|<link""", html)
    assert set(re.findall(r"https?://[^\s\"'`)]+", html)) == {"http://www.w3.org/2000/svg"}  # a name, not a request
    assert html.count("<script") == 2  # the data and the model: nothing else to load


def test_snapshot_epochs_fit_the_budget_evenly_with_the_first_and_the_last():
    cfg = LLM.RunConfig(epochs=16, snapshot=4)
    assert LLM.snapshot_epochs(cfg, 1000) == {4, 8, 12, 16}  # all fit
    per_snapshot = LLM.EXPLORER_SNAPSHOT_BYTES // 3 // 2  # parameters such that exactly 3 fit
    assert LLM.snapshot_epochs(cfg, per_snapshot) == {4, 12, 16}  # ranks 0, round(1.5) = 2, 3
    assert LLM.snapshot_epochs(cfg, LLM.EXPLORER_SNAPSHOT_BYTES // 2) == {16}  # room for one: the last
    assert LLM.snapshot_epochs(cfg, LLM.EXPLORER_SNAPSHOT_BYTES) == set()  # none: the page has the best only
    assert LLM.snapshot_epochs(LLM.RunConfig(epochs=5, snapshot=0), 1000) == set()
    assert LLM.snapshot_epochs(LLM.RunConfig(epochs=7, snapshot=3), 1000) == {3, 6}


@pytest.mark.parametrize("preset, limit", [("classroom", 3_000_000), ("longer", 6_000_000)])
def test_a_page_of_the_presets_fits_its_size(preset, limit):
    """The page of each preset's model with every snapshot its budget keeps, none of them the best."""
    cfg = LLM.config_of({}, preset)
    tokenizer = LLM.CharTokenizer.learn((ROOT / "refranes.txt").read_text(encoding="utf-8"), [], cfg)
    torch.manual_seed(0)
    model = LLM.TransformerLM(tokenizer.vocab_size, cfg)
    half = {k: v.half() for k, v in model.state_dict().items()}
    epochs = sorted(LLM.snapshot_epochs(cfg, LLM.count_parameters(model)))
    assert len(epochs) == 3  # classroom: epochs 1, 2, 3; longer: 4, 12, 16 of 4, 8, 12, 16
    snapshots = [LLM.Snapshot(e, 2.0, half) for e in epochs]
    best = {"epoch": cfg.epochs + 1, "val_loss": 1.5}  # a best epoch that is not a snapshot: the largest page
    history = [{"epoch": e, "train_loss": 2.0, "val_loss": 2.0, "lr": 1e-3} for e in range(1, cfg.epochs + 1)]
    page = LLM.explorer_html(LLM.explorer_data(model, tokenizer, cfg, best, history, 1.6, snapshots, "a test"))
    assert len(page.encode("utf-8")) < limit


def test_the_explorer_command_writes_beside_the_checkpoint_or_into_out(trained_copy, tmp_path, capsys):
    assert LLM.main(["--explorer", "--checkpoint", str(trained_copy)]) == 0
    written = trained_copy.parent / "explorer.html"
    assert f"wrote {written}" in capsys.readouterr().out
    data = page_data(written)
    saved = torch.load(trained_copy, weights_only=True)
    assert [e["epoch"] for e in data["epochs"]] == [saved["epoch"]]  # a checkpoint holds one epoch
    assert [r["epoch"] for r in data["history"]] == list(range(1, saved["epoch"] + 1))
    other = tmp_path / "elsewhere"
    assert LLM.main(["--explorer", "--checkpoint", str(trained_copy), "--out", str(other), "--seed", "7"]) == 0
    assert page_data(other / "explorer.html")["sampling"]["seed"] == 7
    trained_copy.write_bytes(trained_copy.read_bytes()[:1000])
    one_line_error(capsys, ["--explorer", "--checkpoint", str(trained_copy)], "not a readable checkpoint")
    one_line_error(capsys, ["--explorer", "--checkpoint", str(tmp_path / "none.pt")], "checkpoint not found")


def test_the_gallery_links_the_page(tiny_run):
    gallery = (tiny_run / "README.md").read_text(encoding="utf-8")
    assert "Open [explorer.html](explorer.html)." in gallery and "![" not in gallery.split("explorer.html:")[1][:200]


# --- in a real browser --------------------------------------------------------------------------

def chromium_executable() -> str | None:
    """A Chromium or Chrome to drive: LLM_CHROMIUM, then the usual names and places."""
    names = [os.environ.get("LLM_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome",
             "google-chrome-stable", "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
             "/Applications/Chromium.app/Contents/MacOS/Chromium"]
    return next((shutil.which(n) or n for n in names if n and (shutil.which(n) or Path(n).is_file())), None)


def chromium_or_skip() -> str:
    """The Chromium to drive; without playwright or a Chromium, a skip, or a failure where
    LLM_BROWSER_TESTS=required (asked before anything is imported)."""
    required = os.environ.get("LLM_BROWSER_TESTS") == "required"
    try:
        import playwright  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("LLM_BROWSER_TESTS=required but playwright is not installed")
        pytest.skip("explorer.html is tested in a browser: pip install playwright (and a Chromium) to run these")
    executable = chromium_executable()
    if executable is None:
        if required:
            pytest.fail("LLM_BROWSER_TESTS=required but no Chromium was found")
        pytest.skip("explorer.html is tested in Chromium: none found (Debian: apt install chromium; or set LLM_CHROMIUM)")
    return executable


@pytest.fixture(scope="module")
def browser():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Opened:
    """The page in a tab: what it logged, what it asked the network for."""

    def __init__(self, browser, path: Path, width=1280, height=720):
        self.problems, self.requests = [], []
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                           else route.abort())  # the network is off: only the file itself may load
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.problems.append(m.text) if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector("body[data-ready=yes]", timeout=20_000)

    def js(self, expression, *args):
        return self.page.evaluate(expression, *args)

    def kept(self) -> int:
        return self.js("document.querySelectorAll('#bars .row:not(.dropped)').length")


@pytest.fixture(scope="module")
def opened(browser, tiny_run):
    tab = Opened(browser, tiny_run / "explorer.html")
    yield tab
    tab.context.close()


@pytest.fixture(scope="module")
def reference(tiny_run):
    model, tokenizer, cfg, _ = LLM.load_checkpoint(tiny_run / "model.pt", "cpu")
    return model.eval(), tokenizer, cfg


def window(tokenizer, cfg, text):
    return ([tokenizer.eol_id] + tokenizer.encode(text))[-cfg.context:]


TEXTS = ["", "No hay", "Quien", "El que mucho abarca poco aprieta, y quien mucho habla mucho yerra, y el que calla otorga siempre"]  # the last: past the context


def test_logits_and_attention_equal_pytorch_also_past_the_context(opened, reference):
    model, tokenizer, cfg = reference
    assert len(TEXTS[-1]) + 1 > cfg.context
    assert opened.js("explorer.vocabulary") == [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)]
    for text in TEXTS:
        ids = window(tokenizer, cfg, text)
        with torch.no_grad():
            logits, attention = model(torch.tensor([ids]), return_attention=True)
        page_logits = torch.tensor(opened.js("t => explorer.logits(t)", text))
        assert (page_logits - logits[0, -1]).abs().max() < 1e-4, text
        page_attention = torch.tensor(opened.js("t => explorer.attention(t)", text))  # (N, H, T, T)
        assert page_attention.shape == (cfg.n_layers, cfg.n_heads, len(ids), len(ids))
        expected = torch.stack([w[0] for w in attention])
        assert (page_attention - expected).abs().max() < 1e-4, text
        assert (page_attention.triu(1) == 0).all()  # the masked future


@pytest.mark.parametrize("options", [dict(temperature=1.0, top_k=0, top_p=1.0), dict(temperature=0.4, top_k=3, top_p=1.0),
                                     dict(temperature=1.5, top_k=0, top_p=0.9), dict(temperature=0.7, top_k=5, top_p=0.5),
                                     dict(temperature=1.0, top_k=0, top_p=1.0, greedy=True)])
def test_probabilities_after_filtering_equal_pytorch(opened, reference, options):
    model, tokenizer, cfg = reference
    for text in TEXTS:
        with torch.no_grad():
            logits = model(torch.tensor([window(tokenizer, cfg, text)]))[0, -1]
        choice = LLM.choose_next(logits, LLM.Sampling(**options), torch.Generator().manual_seed(0))
        expected = torch.zeros_like(choice.probs)  # what the draw picks from: the kept set, rescaled
        if options.get("greedy"):
            expected[choice.id] = 1
        else:
            kept = choice.order[:choice.kept]
            expected[kept] = choice.probs[kept] / choice.cumulative[choice.kept - 1]
        page = torch.tensor(opened.js("([t, o]) => explorer.probabilities(t, o)", [text, options]))
        assert (page - expected).abs().max() < 1e-4, (text, options)
        assert int((page > 0).sum()) == (1 if options.get("greedy") else choice.kept)


@pytest.mark.parametrize("prompt, seed, temperature, top_k", [("No hay", 1337, 0.4, 3), ("", 0, 1.0, 0), ("Quien", 5, 0.8, 5)])
def test_the_page_writes_what_generate_writes_with_the_same_seed(opened, reference, prompt, seed, temperature, top_k):
    model, tokenizer, cfg = reference
    sampling = LLM.Sampling(temperature, top_k, 1.0, False, 30)
    expected = LLM.generate(model, tokenizer, prompt, sampling, torch.Generator().manual_seed(seed))
    written = opened.js("([t, o]) => explorer.generate(t, o)",
                        [prompt, dict(seed=seed, temperature=temperature, top_k=top_k, top_p=1.0, max_chars=30)])
    assert written == expected


def test_every_panel_is_drawn_with_no_error_and_no_request(opened, tiny_run):
    data = page_data(tiny_run / "explorer.html")
    assert opened.js("document.getElementById('text').value") == "No hay"  # the first prompt it can read
    assert opened.kept() == 3 and opened.js("document.querySelectorAll('#bars .row').length") >= 12
    painted = opened.js("""() => { const c = document.getElementById('heatmap'), g = c.getContext('2d');
        const d = g.getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0) n++; return n / (d.length / 4); }""")
    assert painted > 0.5
    assert opened.js("document.querySelectorAll('#loss polyline').length") == 2
    assert opened.js("document.querySelectorAll('#loss circle').length") == len(data["epochs"])
    assert opened.js("document.querySelectorAll('#map text.token').length") == data["model"]["vocab_size"]
    opened.page.wait_for_function(f"document.querySelectorAll('#compare tr').length === {len(data['epochs']) + 1}")
    assert "No steps yet" in opened.js("document.getElementById('steps').textContent")
    assert "Head 1 of layer 1" in opened.js("document.getElementById('looks').textContent")
    assert opened.problems == []
    assert opened.requests == [(tiny_run / "explorer.html").resolve().as_uri()]


def test_an_unknown_character_is_named_in_the_page_never_an_error(opened):
    opened.page.fill("#text", "No hay ☃")
    message = opened.js("document.getElementById('message').textContent")
    assert "☃" in message and "U+2603" in message
    assert opened.js("document.getElementById('step').disabled") and opened.js("document.getElementById('finish').disabled")
    with pytest.raises(Exception, match="U\\+2603"):
        opened.js("explorer.logits('☃')")
    opened.page.fill("#text", "Más vale".replace("á", "a\u0301"))  # decomposed: a + combining accent, read in NFC
    assert opened.js("document.getElementById('message').textContent") == ""
    assert opened.js("explorer.logits('Ma\u0301s')") == opened.js("explorer.logits('Más')")
    opened.page.fill("#text", "No hay")
    assert opened.js("document.getElementById('message').textContent") == "" and opened.problems == []


def test_a_refused_text_lists_the_characters_the_model_knows(opened, reference):
    _, tokenizer, _ = reference
    opened.page.fill("#text", "kilo ☃")
    message = opened.js("document.getElementById('message').textContent")
    known = message.split("The characters it knows: ")[1].split()
    assert sorted(known) == sorted("␣" if c == " " else c for c in tokenizer.chars if c != "\n")
    opened.page.fill("#text", "No hay")
    assert opened.js("document.getElementById('message').textContent") == ""


def test_a_seed_the_page_cannot_take_is_said_in_pythons_words_and_never_changed(opened, reference):
    model, tokenizer, cfg = reference
    page = opened.page
    page.fill("#text", "No hay")
    for typed in ("-5", "4294968633", "1.5"):
        page.fill("#seed", typed)
        message = opened.js("document.getElementById('message').textContent")
        assert "The seed must be a whole number from 0 to 4294967295" in message and f"got {typed}:" in message
        assert opened.js("document.getElementById('step').disabled") and opened.js("document.getElementById('finish').disabled")
        assert page.input_value("#seed") == typed and opened.kept() > 0  # the bars stay: only Step waits
    for typed in (-5, 4294968633):  # Python refuses the same seeds, with the same rule
        with pytest.raises(LLM.UserError, match="--seed must be a whole number from 0 to 4294967295"):
            LLM.validate(LLM.RunConfig(seed=typed), check_device=False)
    page.fill("#seed", str(cfg.seed))
    assert opened.js("document.getElementById('message').textContent") == ""
    page.click("#step")
    expected = LLM.generate(model, tokenizer, "No hay", LLM.Sampling.of(cfg), torch.Generator().manual_seed(cfg.seed))
    assert page.input_value("#text") == expected[:7] and opened.problems == []
    page.fill("#text", "No hay")


def test_the_sliders_and_the_greedy_switch_change_the_bars_and_the_kept_set(opened, reference):
    model, tokenizer, cfg = reference
    page = opened.page
    page.fill("#text", "Quien")
    with torch.no_grad():
        logits = model(torch.tensor([window(tokenizer, cfg, "Quien")]))[0, -1]
    first_bar = "document.querySelector('#bars .row .pct').textContent"
    before = opened.js(first_bar)
    page.fill("#temperature", "1.5")
    assert opened.js(first_bar) != before  # flatter: the favourite loses probability
    page.fill("#top-k", "0")
    page.fill("#top-p", "0.5")
    expected = LLM.choose_next(logits, LLM.Sampling(1.5, 0, 0.5), torch.Generator()).kept
    assert opened.kept() == expected
    page.fill("#top-k", "1")
    assert opened.kept() == 1
    page.fill("#top-k", "3")
    page.fill("#top-p", "1")
    assert opened.kept() == 3
    page.check("#greedy")
    assert opened.kept() == 1
    page.uncheck("#greedy")
    page.fill("#temperature", str(cfg.temperature))
    assert opened.kept() == 3 and opened.js(first_bar) == before


def test_step_undo_and_write_to_the_end_follow_the_seed(opened, reference):
    model, tokenizer, cfg = reference
    page = opened.page
    page.fill("#text", "No hay")
    expected = LLM.generate(model, tokenizer, "No hay", LLM.Sampling.of(cfg), torch.Generator().manual_seed(cfg.seed))
    first_u = float(torch.rand((), generator=torch.Generator().manual_seed(cfg.seed)))
    page.click("#step")
    assert page.input_value("#text") == expected[:7]
    step = opened.js("document.querySelector('#steps .step').textContent")
    assert f"u = {first_u:.4f}" in step and "context: ⏎No␣hay" in step
    page.click("#undo")
    assert page.input_value("#text") == "No hay" and opened.js("document.querySelectorAll('#steps .step').length") == 0
    page.click("#finish")
    page.wait_for_selector("body:not([data-writing])")  # it writes a few steps at a time, drawing between them
    assert page.input_value("#text") == expected  # the same draws: the same proverb as --generate
    steps = opened.js("document.querySelectorAll('#steps .step').length")
    assert steps == min(len(expected) - len("No hay") + 1, cfg.max_chars)  # + the step that chose ⏎
    ended = len(expected) - len("No hay") < cfg.max_chars  # it chose ⏎ before max_chars
    assert ("the proverb is over" in opened.js("document.getElementById('message').textContent")) == ended
    assert opened.js("document.getElementById('step').disabled") == ended
    assert opened.problems == []


def test_an_earlier_epoch_is_that_epochs_model(opened, reference, tiny_run):
    model, tokenizer, cfg = reference
    data = page_data(tiny_run / "explorer.html")
    first = data["epochs"][0]
    early = LLM.TransformerLM(tokenizer.vocab_size, cfg).eval()
    early.load_state_dict(unpacked(data, first))
    opened.page.select_option("#epoch", str(first["epoch"]))
    assert opened.js("explorer.epoch") == first["epoch"]
    with torch.no_grad():
        expected = early(torch.tensor([window(tokenizer, cfg, "No hay")]))[0, -1]
    assert (torch.tensor(opened.js("explorer.logits('No hay')")) - expected).abs().max() < 1e-4
    opened.js(f"explorer.use({data['best_epoch']})")
    assert opened.js("document.getElementById('epoch').value") == str(data["best_epoch"])


def test_keyboard_language_and_a_phone_width_screen(browser, opened, tiny_run):
    page = opened.page
    page.fill("#text", "No hay")
    page.focus("#heatmap")
    page.keyboard.press("ArrowUp")
    assert "(position 5)" in opened.js("document.getElementById('looks').textContent")  # 'a', one row up
    page.click("#language")
    assert opened.js("document.querySelector('h1').textContent").startswith("Explorador")
    assert "Capa" in opened.js("document.getElementById('attention-panel').textContent")
    page.click("#language")
    assert opened.js("document.querySelector('h1').textContent").startswith("LLM.py explorer")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "explorer-1280x720.png"))
    phone = Opened(browser, tiny_run / "explorer.html", width=390, height=844)
    try:
        assert phone.js("document.documentElement.scrollWidth") <= 390  # nothing wider than the screen
        assert phone.js("document.getElementById('heatmap').getBoundingClientRect().width") <= 390
        phone.page.screenshot(path=str(SCREENSHOTS / "explorer-phone.png"), full_page=True)
        assert phone.problems == []
    finally:
        phone.context.close()


# --- what the README says the classroom page shows ------------------------------------------------

def test_a_dead_key_is_no_error_and_enter_is_step(opened, reference):
    """An accent typed with a dead key is composed with its letter before the text is read (the
    composition events a keyboard sends, dispatched by hand); Enter in the box takes one step."""
    model, tokenizer, cfg = reference
    page = opened.page
    page.fill("#text", "No hay")
    composing = """(value) => { const box = document.getElementById('text');
        box.dispatchEvent(new CompositionEvent('compositionstart'));
        box.value = value; box.dispatchEvent(new InputEvent('input', {isComposing: true})); }"""
    opened.js(composing, "No hay ´")  # the dead key alone: not yet a character, so not an error
    assert opened.js("document.getElementById('message').textContent") == "" and opened.kept() > 0
    opened.js("""() => { const box = document.getElementById('text'); box.value = 'No hay é';
        box.dispatchEvent(new CompositionEvent('compositionend', {data: 'é'})); }""")
    page.click("#step")  # from the composed text: one character after "No hay é"
    assert page.input_value("#text").startswith("No hay é") and len(page.input_value("#text")) == len("No hay é") + 1
    page.fill("#text", "No hay")
    page.press("#text", "Enter")
    expected = LLM.generate(model, tokenizer, "No hay", LLM.Sampling.of(cfg), torch.Generator().manual_seed(cfg.seed))
    assert page.input_value("#text") == expected[:7] and opened.problems == []
    page.fill("#text", "No hay")


def test_a_spanish_browser_gets_the_spanish_page_and_the_choice_is_remembered(browser, tiny_run):
    context = browser.new_context(locale="es-ES")
    try:
        page = context.new_page()
        page.goto((tiny_run / "explorer.html").resolve().as_uri())
        page.wait_for_selector("body[data-ready=yes]", timeout=20_000)
        assert page.evaluate("document.documentElement.lang") == "es" and page.inner_text("#language") == "English"
        assert page.inner_text("[data-t=seed]") == "Semilla"
        page.click("#language")  # English chosen: kept across a reload, from file:// too
        page.reload()
        page.wait_for_selector("body[data-ready=yes]", timeout=20_000)
        assert page.evaluate("document.documentElement.lang") == "en" and page.inner_text("[data-t=seed]") == "Seed"
    finally:
        context.close()


def test_the_readme_tells_what_the_classroom_page_shows_for_no_hay():
    """The README's numbers for "No hay" are those of outputs/explorer.html, computed here in
    PyTorch from the weights the page embeds."""
    from test_prose import README, said
    data = page_data(ROOT / "outputs" / "explorer.html")
    vocabulary, cfg = data["tokenizer"]["vocabulary"], LLM.config_of({}, "classroom")
    models = {}
    for epoch in data["epochs"]:
        models[epoch["epoch"]] = LLM.TransformerLM(len(vocabulary), cfg).eval()
        models[epoch["epoch"]].load_state_dict(unpacked(data, epoch))
    ids = torch.tensor([[vocabulary.index(c) for c in "\nNo hay"]])
    with torch.no_grad():
        logits, attention = models[data["best_epoch"]](ids, return_attention=True)
    p = lambda temperature, c: float((logits[0, -1] / temperature).softmax(-1)[vocabulary.index(c)])  # noqa: E731
    cold, warm, e, o, a, hot = said(README, r"a space is all but certain: ([\d.]+)% at τ 0.4 \(entropy 0.01 bits\), "
                                            r"([\d.]+)% at τ 1 \(then \*e\* ([\d.]+)%, \*o\* ([\d.]+)%, \*a\* ([\d.]+)%\), "
                                            r"([\d.]+)% at τ 1.5")
    for percent, temperature, c in ((cold, 0.4, " "), (warm, 1, " "), (e, 1, "e"), (o, 1, "o"), (a, 1, "a"), (hot, 1.5, " ")):
        assert f"{100 * p(temperature, c):.{len(percent.split('.')[1]) if '.' in percent else 0}f}" == percent, c
    start, again, itself = said(README, r"layer 1's head 3 puts (\d+)% of its weight on the ⏎ that starts the line, "
                                        r"layer 2's head 4 (\d+)% on that ⏎ too, and layer 2's head 3 (\d+)% on the \*y\* itself")
    assert [round(100 * float(w)) for w in (attention[0][0, 2, 6, 0], attention[1][0, 3, 6, 0], attention[1][0, 2, 6, 6])] \
        == [int(start), int(again), int(itself)]
    cold_p = (logits[0, -1] / 0.4).softmax(-1)
    assert f"{float(-(cold_p * cold_p.clamp_min(1e-30).log2()).sum()):.2f}" == "0.01"  # the entropy quoted
    epochs = said(README, r"already ([\d.]+)% after epoch 1, and ([\d.]+)% and ([\d.]+)% after epochs 2 and 3")
    for epoch, percent in zip((1, 2, 3), epochs):
        with torch.no_grad():
            space = float(models[epoch](ids)[0, -1].softmax(-1)[vocabulary.index(" ")])
        assert f"{100 * space:.1f}" == percent, epoch
    u, = said(README, r"The first step after \"No hay\" draws u = ([\d.]+)")
    assert f"{float(torch.rand((), generator=torch.Generator().manual_seed(cfg.seed))):.4f}" == u
    best = next(e for e in data["epochs"] if e["best"])
    assert said(README, r"its two directions hold ([\d.]+)% and ([\d.]+)% of the spread after epoch 3") == \
        tuple(f"{100 * x:.1f}" for x in best["explained"])
    written, = said(README, r"seed 1337 it writes \*(No hay[^*]+)\*")
    expected = LLM.generate(models[data["best_epoch"]], LLM.CharTokenizer(vocabulary), "No hay",
                            LLM.Sampling.of(cfg), torch.Generator().manual_seed(1337))
    assert " ".join(written.split()) == expected  # the README wraps its lines


# --- word pieces (section 3) ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def opened_bpe(browser, bpe_run):
    tab = Opened(browser, bpe_run / "explorer.html")
    yield tab
    tab.context.close()


def test_the_page_cuts_text_into_the_same_pieces_as_python(opened_bpe, bpe_run):
    _, tokenizer, _, _ = LLM.load_checkpoint(bpe_run / "model.pt", "cpu")
    assert tokenizer.kind == "bpe" and len(tokenizer.merges) > 0
    lines = LLM.text_lines(PROVERBS.read_text(encoding="utf-8"))
    lines += ["Quién  dos  espacios, y tres.", " empieza con espacio", "a", ""]  # characters of the 600 only
    page = opened_bpe.js("lines => lines.map(l => explorer.encode(l))", lines)
    assert page == [tokenizer.encode(line) for line in lines]


def test_a_bpe_page_computes_and_writes_what_pytorch_does(opened_bpe, bpe_run):
    model, tokenizer, cfg, _ = LLM.load_checkpoint(bpe_run / "model.pt", "cpu")
    for text in TEXTS:
        with torch.no_grad():
            logits = model(torch.tensor([window(tokenizer, cfg, text)]))[0, -1]
        assert (torch.tensor(opened_bpe.js("t => explorer.logits(t)", text)) - logits).abs().max() < 1e-4, text
    for prompt, seed in (("No hay", 1337), ("", 3), ("Quien", 5)):
        sampling = LLM.Sampling(1.0, 0, 1.0, False, 40)
        expected = LLM.generate(model, tokenizer, prompt, sampling, torch.Generator().manual_seed(seed))
        written = opened_bpe.js("([t, o]) => explorer.generate(t, o)",
                                [prompt, dict(seed=seed, temperature=1.0, top_k=0, top_p=1.0, max_chars=40)])
        assert written == expected, prompt


def test_a_bpe_page_steps_one_piece_at_a_time_and_labels_pieces(opened_bpe, bpe_run):
    page = opened_bpe
    assert page.js("document.getElementById('text').value") == "No hay"
    assert "piece" in page.js("document.querySelector('[data-t=write-why]').textContent")
    page.page.click("#greedy")
    page.page.click("#step")
    model, tokenizer, cfg, _ = LLM.load_checkpoint(bpe_run / "model.pt", "cpu")
    with torch.no_grad():
        best = int(model(torch.tensor([window(tokenizer, cfg, "No hay")]))[0, -1].argmax())
    assert page.js("document.getElementById('text').value") == "No hay" + tokenizer.token_text(best)
    page.page.click("#undo")
    page.page.click("#greedy")
    assert page.js("document.getElementById('text').value") == "No hay"
    assert page.problems == [] and all(r.startswith("file:") for r in page.requests)


def test_the_readme_names_the_strongest_links_the_last_epoch_picture_draws():
    """'Reading an epoch picture': the links the README names are the strongest of the direct
    path among the picture's 14 characters, in that order, computed from the best epoch's weights."""
    from test_prose import README, said
    data = page_data(ROOT / "outputs" / "explorer.html")
    vocabulary, cfg = data["tokenizer"]["vocabulary"], LLM.config_of({}, "classroom")
    model = LLM.TransformerLM(len(vocabulary), cfg).eval()
    model.load_state_dict(unpacked(data, next(e for e in data["epochs"] if e["best"])))
    corpus = LLM.prepare_data(LLM.read_text(ROOT / "refranes.txt"), cfg)
    pictures = LLM.EpochPictures.__new__(LLM.EpochPictures)  # only its direct path: no figure drawn
    counts = collections.Counter(i for line in corpus.train_text for i in corpus.tokenizer.encode(line + "\n"))
    ids = sorted(sorted(counts, key=lambda i: (-counts[i], i))[:LLM.EpochPictures.N_CHARS])
    links = pictures.direct_path(model)[ids][:, ids]
    order = links.flatten().argsort(descending=True)
    strongest = [(vocabulary[ids[int(f) // len(ids)]], vocabulary[ids[int(f) % len(ids)]]) for f in order[:6]]
    named = said(README, r"After the last epoch the strongest links are\s+Spanish spelling: `(.)` → `(.)` \(([\d.]+) logits "
                         r"above the average: .*?\), `(.)` → `(.)` \(([\d.]+): .*?\), `(.)` → `(.)` and `(.)` → `(.)` .*?, "
                         r"`(.)` → `(.)`, `(.)` → space\.")
    pairs = [(named[0], named[1]), (named[3], named[4]), (named[6], named[7]), (named[8], named[9]),
             (named[10], named[11]), (named[12], " ")]
    assert pairs == strongest
    assert [f"{float(links.flatten()[f]):.1f}" for f in order[:2]] == [named[2], named[5]]


# --- in front of a class: instant, nothing stale, keyboard, touch, projector, Spanish, contrast ----

LONG = TEXTS[-1]  # longer than the context: the window slides


def type_in(tab, text):
    """One keystroke: the box takes a new value and sends its input event, as a keyboard does."""
    tab.js("""(v) => { const box = document.getElementById('text'); box.value = v;
                       box.dispatchEvent(new InputEvent('input')); }""", text)


def positions(tab) -> int:
    return tab.js("explorer.work.positions")


def comparison_cells(tab) -> list[str]:
    return tab.js("[...document.querySelectorAll('#compare td.mono')].map(c => c.textContent)")


def wait_for_comparison(tab, seconds=10):
    """Until every saved epoch has answered (the page's policy forbids wait_for_function's eval)."""
    for _ in range(int(seconds / 0.05)):
        if "—" not in comparison_cells(tab):
            return
        tab.page.wait_for_timeout(50)
    raise AssertionError(f"the epochs did not answer in {seconds} s: {comparison_cells(tab)}")


def test_a_keystroke_computes_the_new_position_of_the_shown_epoch_only(opened, reference, tiny_run):
    """The page keeps each epoch's keys and values: a character typed costs one position of one
    epoch, as much as the ratio to a forward pass says; the other epochs answer once typing
    pauses, and their answers cost a position each too."""
    _, _, cfg = reference
    epochs = len(page_data(tiny_run / "explorer.html")["epochs"])
    opened.js("document.getElementById('training-panel').scrollIntoView()")
    type_in(opened, "No ha")
    wait_for_comparison(opened)
    before = positions(opened)
    type_in(opened, "No hay")
    assert positions(opened) - before == 1  # one character more: one position, not the 7 of the window
    assert set(comparison_cells(opened)) == {"—"}  # nothing the page shows is of the text before
    assert "once typing pauses" in opened.js("document.getElementById('compare-note').textContent")
    wait_for_comparison(opened)
    assert positions(opened) - before == epochs  # then each of the other epochs: its one new position
    first_bar = opened.js("document.querySelector('#bars .row .char').textContent")
    current = opened.js("document.querySelector('#compare tr.current td.mono').textContent")
    assert current.startswith(first_bar + " ")  # the shown epoch's answer is the bars' favourite
    before = positions(opened)
    type_in(opened, "No ha")  # a character less: every position is in the cache already
    assert positions(opened) == before
    type_in(opened, LONG)
    before = positions(opened)
    type_in(opened, LONG + "s")
    assert positions(opened) - before == cfg.context  # past the context the window slides: one forward pass
    type_in(opened, "No hay")


def test_the_cache_computes_what_a_pass_over_the_whole_window_computes(opened):
    """To the last bit: the same sums in the same order, whether a position was computed with its
    text or added later, after an edit in the middle, or after forget() emptied every cache."""
    for grown, edited in (("Más vale tarde", "Más vale pájaro"), ("Quien", "Quien mucho"), ("", "A")):
        cached = opened.js("""([a, b]) => { explorer.logits(a); return [explorer.logits(b), explorer.attention(b)]; }""",
                           [grown, edited])
        fresh = opened.js("""(b) => { explorer.forget(); return [explorer.logits(b), explorer.attention(b)]; }""", edited)
        assert cached == fresh, edited


def test_a_text_it_cannot_read_empties_every_panel_that_reads_the_text(opened):
    opened.js("document.getElementById('training-panel').scrollIntoView()")
    type_in(opened, "Más vale")
    wait_for_comparison(opened)
    type_in(opened, "Más vale ☃")
    for panel in ("bars", "next-summary", "bar-detail", "looks", "strip"):
        assert opened.js(f"document.getElementById('{panel}').textContent") == "", panel
    blank = opened.js("""() => { const c = document.getElementById('heatmap'), empty = document.createElement('canvas');
        empty.width = c.width; empty.height = c.height; return c.toDataURL() === empty.toDataURL(); }""")
    assert blank and set(comparison_cells(opened)) == {"—"}
    opened.page.select_option("#head", "1")  # another head: still nothing about a text that is not there
    assert opened.js("document.getElementById('looks').textContent") == ""
    assert "☃" in opened.js("document.getElementById('message').textContent")
    known = opened.js("document.getElementById('known').textContent")  # beside the box, before any refusal
    assert known.startswith("The characters it knows: ") and " á " in known and "☃" not in known
    opened.page.select_option("#head", "0")
    type_in(opened, "Más vale")
    assert opened.kept() == 3 and "“e” (position 8)" in opened.js("document.getElementById('looks').textContent")
    type_in(opened, "No hay")


def test_write_to_the_end_shows_its_progress_and_stops_when_asked(opened, reference):
    model, tokenizer, cfg = reference
    page = opened.page
    type_in(opened, "No hay")
    during = opened.js("""() => { const finish = document.getElementById('finish'); finish.click();
        const seen = {button: finish.textContent, writing: document.body.dataset.writing,
                      message: document.getElementById('message').textContent, step: document.getElementById('step').disabled};
        finish.click(); return seen; }""")  # Write to the end, then at once Stop
    assert during["button"] == "Stop" and during["writing"] == "yes" and during["step"]
    assert during["message"] == f"Writing… 1 of at most {cfg.max_chars} characters. Stop ends it here."
    page.wait_for_selector("body:not([data-writing])")
    expected = LLM.generate(model, tokenizer, "No hay", LLM.Sampling.of(cfg), torch.Generator().manual_seed(cfg.seed))
    assert page.input_value("#text") == expected[:7]  # stopped after its first step, in the seed's order
    assert opened.js("document.getElementById('message').textContent").startswith("Stopped")
    assert page.inner_text("#finish") == "Write to the end" and not opened.js("document.getElementById('step').disabled")
    page.click("#undo")  # back to the beginning, then to the end: the same proverb as --generate
    page.click("#finish")
    page.wait_for_selector("body:not([data-writing])")
    assert page.input_value("#text") == expected
    type_in(opened, "No hay")


def test_reset_brings_back_the_runs_settings_text_and_epoch(opened, reference, tiny_run):
    _, _, cfg = reference
    data = page_data(tiny_run / "explorer.html")
    page = opened.page
    page.fill("#temperature", "1.5")
    page.fill("#top-k", "0")
    page.fill("#seed", "7")
    page.select_option("#epoch", str(data["epochs"][0]["epoch"]))
    type_in(opened, "Quien")
    page.click("#step")
    page.click("#reset")
    values = opened.js("['temperature', 'top-k', 'top-p', 'seed', 'text'].map(id => document.getElementById(id).value)")
    assert values == [str(cfg.temperature), str(cfg.top_k), str(float(cfg.top_p)).rstrip("0").rstrip("."), str(cfg.seed), "No hay"]
    assert opened.js("explorer.epoch") == data["best_epoch"] and opened.js("document.querySelectorAll('#steps .step').length") == 0
    assert opened.kept() == 3 and opened.problems == []


def test_the_keyboard_keeps_its_place_and_reads_every_bar(opened, reference, tiny_run):
    model, tokenizer, cfg = reference
    data, page = page_data(tiny_run / "explorer.html"), opened.page
    type_in(opened, "No hay")
    first, best = data["epochs"][0]["epoch"], data["best_epoch"]
    for epoch, key in ((first, " "), (best, "Enter")):  # a dot of the loss chart: Space does not scroll
        page.focus(f"#loss [data-focus-key=epoch-{epoch}]")
        scrolled = opened.js("window.scrollY")
        page.keyboard.press(key)
        assert opened.js("explorer.epoch") == epoch and opened.js("window.scrollY") == scrolled
        assert opened.js("document.activeElement.dataset.focusKey") == f"epoch-{epoch}"  # the new dot has the focus
    page.click("#step")
    page.focus("#undo")
    page.keyboard.press("Enter")  # Undo goes off: the focus moves to Step, not to the page
    assert opened.js("document.getElementById('undo').disabled") and opened.js("document.activeElement.id") == "step"
    page.focus("#bars [tabindex='0']")
    page.keyboard.press("ArrowDown")
    assert opened.js("document.activeElement.dataset.focusKey") == "bar-1"
    with torch.no_grad():
        logits = model(torch.tensor([window(tokenizer, cfg, "No hay")]))[0, -1].double()
    probs = torch.softmax(logits / cfg.temperature, -1)
    second = int(probs.argsort(descending=True)[1])
    detail = opened.js("document.getElementById('bar-detail').textContent")
    token = tokenizer.token_text(second).replace(" ", "␣")
    assert detail.startswith(f"2. “{token}”: logit {logits[second]:.3f}, p {probs[second]:.4f}, cumulative p "
                             f"{probs.sort(descending=True).values[:2].sum():.4f}; kept")
    assert opened.js("document.getElementById('bar-detail').getAttribute('aria-live')") == "polite"
    assert opened.js("document.getElementById('looks').getAttribute('aria-live')") == "polite"
    type_in(opened, "No hay")  # a redraw while a bar has the focus: the same bar keeps it
    assert opened.js("document.activeElement.dataset.focusKey") == "bar-1"


def test_a_drag_that_starts_on_the_heatmap_scrolls_the_page_on_a_phone(browser, tiny_run):
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    try:
        page = context.new_page()
        page.goto((tiny_run / "explorer.html").resolve().as_uri())
        page.wait_for_selector("body[data-ready=yes]", timeout=20_000)
        page.evaluate("document.getElementById('heatmap').scrollIntoView({block: 'center'})")
        box, before = page.locator("#heatmap").bounding_box(), page.evaluate("window.scrollY")
        cdp, x, y = context.new_cdp_session(page), box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
        for k in range(1, 11):  # a finger moving 150 px up (with touch-action: none the page stays put)
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y - 15 * k}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        page.wait_for_timeout(300)
        assert page.evaluate("window.scrollY") > before + 100  # the finger scrolled the page
        assert page.evaluate("getComputedStyle(document.getElementById('heatmap')).touchAction") != "none"
    finally:
        context.close()


TEXT_SIZES = """() => {  // every visible text of the page: its size in CSS pixels, as the screen shows it
  const sizes = [];
  for (const element of document.querySelectorAll('body *')) {
    const own = [...element.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !element.getClientRects().length || element.closest('.sr, option, select, title')) continue;
    let size = parseFloat(getComputedStyle(element).fontSize);
    const chart = element.ownerSVGElement;
    if (chart) size *= chart.getBoundingClientRect().width / chart.viewBox.baseVal.width;  // an SVG's units, scaled
    sizes.push([element.tagName + '#' + (element.id || element.className.baseVal || element.className), size]);
  }
  return sizes;
}"""


def test_projector_mode_writes_every_text_at_18_pixels_or_more_and_is_remembered(browser, tiny_run):
    tab = Opened(browser, tiny_run / "explorer.html", width=1366, height=768)
    try:
        small = [s for s in tab.js(TEXT_SIZES) if s[1] < 18]
        assert small, "the page's own size is smaller: the test must see the difference"
        tab.page.click("#projector")
        assert tab.js("document.getElementById('projector').getAttribute('aria-pressed')") == "true"
        assert [s for s in tab.js(TEXT_SIZES) if s[1] < 17.95] == []
        tab.page.reload()
        tab.page.wait_for_selector("body[data-ready=yes]")
        assert tab.js("document.body.classList.contains('projector')")  # kept, from file:// too
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        tab.page.screenshot(path=str(SCREENSHOTS / "explorer-projector-1366x768.png"))
        tab.page.click("#projector")
        assert not tab.js("document.body.classList.contains('projector')") and tab.problems == []
    finally:
        tab.context.close()


CONTRASTS = """() => {  // WCAG 2 contrast of every visible text on its background, and of the controls' edges
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const luminance = (c) => { const [r, g, b] = rgb(c).slice(0, 3).map(v => { v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const ratio = (a, b) => { const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const background = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor;
    if (!c.startsWith('rgba') || rgb(c)[3] > 0) return c; } return 'rgb(255, 255, 255)'; };
  const texts = [];
  for (const element of document.querySelectorAll('body *')) {
    const own = [...element.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !element.getClientRects().length || element.closest('.sr, option, :disabled')) continue;
    const style = getComputedStyle(element), ink = element.ownerSVGElement ? style.fill : style.color;
    const back = element.ownerSVGElement ? background(element.ownerSVGElement) : background(element);
    texts.push([element.tagName + '#' + (element.id || element.textContent.slice(0, 20)), ratio(ink, back)]);
  }
  const box = document.getElementById('text');
  box.focus();
  const edges = {focus: ratio(getComputedStyle(box).outlineColor, 'rgb(255, 255, 255)'),
                 box: ratio(getComputedStyle(box).borderTopColor, 'rgb(255, 255, 255)'),
                 button: ratio(getComputedStyle(document.getElementById('step')).borderTopColor, 'rgb(255, 255, 255)')};
  return {texts, edges};
}"""


@pytest.mark.parametrize("text", ["No hay", "Quien"])
def test_every_text_and_control_edge_meets_wcag_aa(opened, text):
    type_in(opened, text)
    opened.page.fill("#top-k", "0")
    opened.page.fill("#top-p", "0.5")  # dropped bars on the screen
    opened.js("document.getElementById('heatmap').focus()")
    opened.page.keyboard.press("ArrowUp")  # the strip's colours at another row
    found = opened.js(CONTRASTS)
    assert len(found["texts"]) > 100 and opened.js("document.querySelectorAll('#bars .row.dropped').length") > 0
    assert [t for t in found["texts"] if t[1] < 4.5] == []
    assert all(ratio >= 3 for ratio in found["edges"].values()), found["edges"]
    opened.page.fill("#top-k", "3")
    opened.page.fill("#top-p", "1")
    type_in(opened, "No hay")


def overlapping(boxes):
    return [(a["label"], b["label"]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a["box"][0] < b["box"][0] + b["box"][2] - 0.5 and b["box"][0] < a["box"][0] + a["box"][2] - 0.5
            and a["box"][1] < b["box"][1] + b["box"][3] - 0.5 and b["box"][1] < a["box"][1] + a["box"][3] - 0.5]


@pytest.mark.parametrize("width", [1366, 390])
def test_heatmap_labels_never_overlap_for_long_texts_and_word_pieces(browser, tiny_run, bpe_run, width):
    for folder in (tiny_run, bpe_run):
        tab = Opened(browser, folder / "explorer.html", width=width, height=800)
        try:
            for text in ("No hay", "Quien mucho abarca poco aprieta", LONG):
                type_in(tab, text)
                labels = tab.js("explorer.heatmapLabels")
                assert labels and overlapping(labels) == [] and min(l["font"] for l in labels) >= 10, (folder.name, text)
            assert tab.problems == []
        finally:
            tab.context.close()


def test_the_map_names_the_most_frequent_tokens_and_says_its_colours(opened_bpe, bpe_run):
    data = page_data(bpe_run / "explorer.html")
    _, tokenizer, _, _ = LLM.load_checkpoint(bpe_run / "model.pt", "cpu")
    counted = collections.Counter(i for line in LLM.text_lines(PROVERBS.read_text(encoding="utf-8"))
                                  for i in tokenizer.encode(line + "\n"))
    counts = data["tokenizer"]["counts"]
    assert len(counts) == tokenizer.vocab_size > 100 and sum(counts) <= sum(counted.values())
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], i))
    named = opened_bpe.js("[...document.querySelectorAll('#map text.token')].map(t => t.textContent)")
    assert sorted(named) == sorted(tokenizer.token_text(i).replace("\n", "⏎").replace(" ", "␣") for i in order[:60])
    assert opened_bpe.js("document.querySelectorAll('#map > circle').length") >= tokenizer.vocab_size - 60
    legend = opened_bpe.js("[...document.querySelectorAll('#map-legend span')].map(s => [s.textContent, getComputedStyle(s).color])")
    assert {name for name, _ in legend} == set(data["tokenizer"]["kinds"])
    fills = opened_bpe.js("[...document.querySelectorAll('#map text.token')].map(t => getComputedStyle(t).fill)")
    assert set(fills) <= {color for _, color in legend}  # every label's colour is one the legend names
    opened_bpe.js("document.getElementById('map').focus()")
    opened_bpe.page.keyboard.press("ArrowRight")  # the keyboard visits the tokens, the most frequent first
    top = tokenizer.token_text(order[0]).replace("\n", "⏎").replace(" ", "␣")
    assert opened_bpe.js("document.getElementById('map-note').textContent").startswith(f"“{top}”: ")
    assert f"{counts[order[0]]:,} times" in opened_bpe.js("document.getElementById('map-note').textContent")


def test_the_spanish_page_has_no_english_left_and_writes_decimal_commas(browser, tiny_run):
    context = browser.new_context(locale="es-ES", viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        page.goto((tiny_run / "explorer.html").resolve().as_uri())
        page.wait_for_selector("body[data-ready=yes]", timeout=20_000)
        page.click("#step")
        english = page.evaluate("""() => Object.entries(LABELS.en).filter(([k, v]) => typeof v === 'string'
            && v !== LABELS.es[k] && v.length > 5).map(([k, v]) => v)""")
        shown = page.evaluate("document.body.innerText + ' ' + document.title + ' ' + [...document.querySelectorAll("
                              "'[aria-label]')].map(e => e.getAttribute('aria-label')).join(' ')")
        assert len(english) > 40 and [e for e in english if e in shown] == []
        assert page.title().startswith("Explorador") and page.evaluate("document.documentElement.lang") == "es"
        assert page.inner_text("#temperature-value") == "0,40" and re.fullmatch(r"\d+,\d %", page.inner_text("#bars .pct"))
        assert "entrenado con " in page.inner_text("#about") and "los tokens" in page.inner_text("#api-code")
        assert re.search(r"u = 0,\d{4}", page.inner_text("#steps")) and not re.search(r"\d\.\d", page.inner_text("#next-panel"))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "explorer-es-1366x768.png"))
    finally:
        context.close()


def test_the_datas_own_text_can_never_end_or_open_anything_in_the_page(browser, tiny_run, tmp_path):
    """A text or a prompt holding '<!--<script>', '</script>', ']]>', '&' or U+2028 is data: the
    page still runs, and shows it as it is."""
    data = page_data(tiny_run / "explorer.html")
    tricky = "<!--<script>alert(1)</script>]]>&amp;\u2028\u2029"
    data["source"], data["prompts"] = tricky + ".txt", [tricky, "No hay"]
    html = LLM.explorer_html(data)
    assert "<!--" not in html.split('id="explorer-data">')[1].split("</script>")[0]
    (tmp_path / "explorer.html").write_text(html, encoding="utf-8")
    tab = Opened(browser, tmp_path / "explorer.html")
    try:
        assert tab.js("document.getElementById('epoch').options.length") == len(data["epochs"])
        assert tricky + ".txt" in tab.js("document.getElementById('about').textContent")
        assert tab.js("document.getElementById('text').value") == "No hay" and tab.problems == []
        assert json.loads(re.search(r'id="explorer-data">(.*?)</script>', html, re.S).group(1)) == data
    finally:
        tab.context.close()
