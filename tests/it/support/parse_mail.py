"""Parses one email as a mail client would, with Python's own `email` package (an
implementation of RFC 5322 and MIME independent of usage-worker's lettre): reads the raw
message on stdin and prints JSON on stdout:

- `headers`: every header as parsed (names lower-cased, each a list of its values, unfolded
  and decoded by `email.policy.default`);
- `date_unix`: the Date header in Unix seconds (null when missing or unparsable);
- `text`, `html`: the decoded plain-text and HTML bodies (null when absent);
- `html_text`: the text of the HTML body's <body> as a mail client shows it: tags dropped,
  character references decoded, whitespace collapsed;
- `links`: the `<a href>` links of the HTML body as a mail client shows them: [href, text]
  pairs, character references decoded (`html.parser`);
- `defects`: what the parser found wrong with the message, as text.

Standard library only: no package to install.
"""

import email
import email.policy
import email.utils
import json
import sys
from html.parser import HTMLParser


class Html(HTMLParser):
    """Collects the text of <body> and [href, text] of every <a href> element."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.in_body = False
        self.text = []
        self.links = []
        self.open = None

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.in_body = True
        href = dict(attrs).get("href")
        if tag == "a" and href is not None:
            self.open = [href, ""]

    def handle_data(self, data):
        if self.in_body:
            self.text.append(data)
        if self.open is not None:
            self.open[1] += data

    def handle_endtag(self, tag):
        if tag == "a" and self.open is not None:
            self.open[1] = " ".join(self.open[1].split())
            self.links.append(self.open)
            self.open = None


def main():
    raw = sys.stdin.buffer.read()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    headers = {}
    for name, value in message.items():
        headers.setdefault(name.lower(), []).append(str(value))
    date_unix = None
    if message["date"] is not None:
        try:
            date_unix = int(email.utils.parsedate_to_datetime(str(message["date"])).timestamp())
        except (TypeError, ValueError):
            date_unix = None

    def body(subtype):
        part = message.get_body(preferencelist=(subtype,))
        return None if part is None else part.get_content()

    html = body("html")
    parsed_html = Html()
    if html is not None:
        parsed_html.feed(html)
        parsed_html.close()
    defects = [repr(d) for d in message.defects]
    for part in message.walk():
        defects.extend(repr(d) for d in part.defects)
    json.dump(
        {
            "headers": headers,
            "date_unix": date_unix,
            "text": body("plain"),
            "html": html,
            "html_text": None if html is None else " ".join("".join(parsed_html.text).split()),
            "links": parsed_html.links,
            "defects": defects,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    sys.exit(main())
