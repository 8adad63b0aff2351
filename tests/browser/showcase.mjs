// Drives the complete example's showcase page in headless Chromium: two
// pages join the chat room and see each other's messages, and each page
// receives the /sse ticks with the right ids.
//
//   node tests/browser/showcase.mjs http://127.0.0.1:PORT [screenshot.png]
//   MIST_PROTOCOL=h2 node tests/browser/showcase.mjs https://127.0.0.1:PORT
//
// With MIST_PROTOCOL set, the page and its event stream must also have
// come over that protocol (`nextHopProtocol`), and a self-signed
// certificate is accepted.
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
const protocol = process.env.MIST_PROTOCOL;
if (!base) {
  console.error("usage: showcase.mjs BASE_URL [SCREENSHOT]");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-quic",
    "--disable-component-update", "--disable-sync",
  ],
});

const results = [];
async function check(name, body) {
  try {
    await body();
    results.push([name, null]);
    console.log(`ok ${name}`);
  } catch (error) {
    results.push([name, error]);
    console.log(`FAILED ${name}: ${error.message}`);
  }
}

const chatTexts = (page) =>
  page.$$eval("#chat li", (items) => items.map((item) => item.textContent));

async function say(page, text) {
  await page.fill("#message", text);
  await page.click("button[type=submit]");
}

async function sees(page, text) {
  await page.waitForFunction(
    (wanted) => [...document.querySelectorAll("#chat li")].some((li) => li.textContent === wanted),
    text,
    { timeout: 10_000 },
  );
}

try {
  const query = "/?count=3&interval_ms=150";
  const options = { viewport: { width: 1000, height: 560 }, ignoreHTTPSErrors: true };
  const alice = await browser.newPage(options);
  const bob = await browser.newPage(options);
  // The status of each WebSocket handshake, from the DevTools protocol:
  // 101 for an HTTP/1.1 upgrade, 200 for an HTTP/2 extended CONNECT.
  const handshakes = { alice: [], bob: [] };
  for (const [name, page] of [["alice", alice], ["bob", bob]]) {
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Network.enable");
    cdp.on("Network.webSocketHandshakeResponseReceived", (event) =>
      handshakes[name].push(event.response.status),
    );
  }
  await alice.goto(base + query);
  await bob.goto(base + query);

  await check("both pages join the chat room", async () => {
    await alice.waitForSelector("#ws-status.live", { timeout: 10_000 });
    await bob.waitForSelector("#ws-status.live", { timeout: 10_000 });
    // Each one's own message coming back proves it is in the room.
    await say(alice, "alice is here");
    await sees(alice, "alice is here");
    await say(bob, "bob is here");
    await sees(bob, "bob is here");
  });

  await check("each page sees the other's messages", async () => {
    await say(alice, "hello from alice");
    await say(bob, "hello from bob");
    for (const page of [alice, bob]) {
      await sees(page, "hello from alice");
      await sees(page, "hello from bob");
    }
    const seenByAlice = await chatTexts(alice);
    if (!seenByAlice.includes("bob is here")) {
      throw new Error(`alice missed bob's message: ${JSON.stringify(seenByAlice)}`);
    }
  });

  await check("server-sent ticks arrive with ids 1, 2, 3", async () => {
    for (const page of [alice, bob]) {
      await page.waitForFunction(() => document.querySelectorAll("#ticks li").length >= 3, null, {
        timeout: 10_000,
      });
      const ticks = await page.$$eval("#ticks li", (items) => items.map((item) => item.textContent));
      const expected = ["tick id=1 data=1", "tick id=2 data=2", "tick id=3 data=3"];
      if (JSON.stringify(ticks) !== JSON.stringify(expected)) {
        throw new Error(`ticks ${JSON.stringify(ticks)}`);
      }
      await page.waitForSelector("#sse-status:not(.live)", { timeout: 10_000 });
    }
  });

  await check("each page's WebSocket opened as expected", async () => {
    // RFC 8441 over HTTP/2 answers 200; HTTP/1.1's upgrade 101.
    const wanted = protocol === "h2" ? 200 : 101;
    const each = Object.values(handshakes);
    if (!each.every((statuses) => statuses.length > 0 && statuses.every((s) => s === wanted))) {
      throw new Error(`handshake statuses ${JSON.stringify(handshakes)}, wanted ${wanted}`);
    }
  });

  if (protocol) {
    await check(`the page and its event stream came over ${protocol}`, async () => {
      const used = await alice.evaluate(() =>
        performance.getEntries()
          .filter((entry) => entry.entryType === "navigation" || entry.name.includes("/sse"))
          .map((entry) => `${entry.name} ${entry.nextHopProtocol}`),
      );
      if (used.length < 2 || !used.every((line) => line.endsWith(` ${protocol}`))) {
        throw new Error(`protocols: ${JSON.stringify(used)}`);
      }
    });
  }

  if (screenshot) {
    await alice.screenshot({ path: screenshot });
    console.log(`wrote ${screenshot}`);
  }
} finally {
  await browser.close();
}

const failed = results.filter(([, error]) => error).length;
console.log(`browser: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed === 0 && results.length > 0 ? 0 : 1);
