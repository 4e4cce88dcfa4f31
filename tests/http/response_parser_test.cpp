// The upstream response parser (http/response_parser.hpp): every rule is checked with the
// response fed whole, one byte at a time and split in two at every point, since the proxy's
// loop hands it whatever recv() returned.
#include "http/response_parser.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <string_view>

namespace gpumod::http {
namespace {

using ::testing::HasSubstr;
using Result = ResponseParser::Result;

struct Outcome {
  Result result = Result::need_more;
  std::string body;
  ResponseHead head;
  bool head_ready = false;
  bool reusable = false;
  std::string error;
  std::uint64_t unsolicited = 0;
  BodyFraming framing = BodyFraming::none;
  bool nothing_received = false;
};

struct Options {
  bool eof = false;           // the server closes the connection after the bytes
  bool head_request = false;  // the request was HEAD
};

Outcome outcome_of(const ResponseParser& p, Result r, std::string body) {
  Outcome o;
  o.result = r;
  o.body = std::move(body);
  o.head = p.head();
  o.head_ready = p.head_ready();
  o.reusable = p.reusable();
  o.error = p.error();
  o.unsolicited = p.unsolicited_bytes();
  o.framing = p.framing();
  o.nothing_received = p.nothing_received();
  return o;
}

// Feeds `pieces` in order, then EOF if asked.
Outcome parse_pieces(const std::vector<std::string_view>& pieces, Options opts) {
  ResponseParser p(opts.head_request);
  std::string body;
  Result r = p.result();
  for (auto piece : pieces) r = p.feed(piece, body);
  if (opts.eof) r = p.feed_eof();
  return outcome_of(p, r, std::move(body));
}

// Runs `check` on the outcome of `wire` fed whole, one byte at a time, and (for short wires) in
// two pieces split at every point.
void each_way(std::string_view wire, const std::function<void(const Outcome&)>& check, Options opts = {}) {
  {
    SCOPED_TRACE("fed whole");
    check(parse_pieces({wire}, opts));
  }
  {
    SCOPED_TRACE("fed one byte at a time");
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < wire.size(); ++i) bytes.push_back(wire.substr(i, 1));
    check(parse_pieces(bytes, opts));
  }
  if (wire.size() <= 2048) {
    for (std::size_t at = 1; at < wire.size(); ++at) {
      SCOPED_TRACE("split at byte " + std::to_string(at));
      check(parse_pieces({wire.substr(0, at), wire.substr(at)}, opts));
      if (::testing::Test::HasFailure()) return;  // one failing split says enough
    }
  }
}

// --- status line -----------------------------------------------------------------------------

TEST(ResponseParser, ContentLengthResponse) {
  each_way("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
           [](const Outcome& o) {
             EXPECT_EQ(o.result, Result::done);
             EXPECT_EQ(o.head.status, 200);
             EXPECT_EQ(o.head.reason, "OK");
             EXPECT_FALSE(o.head.http10);
             EXPECT_EQ(o.head.headers.get("content-type"), "application/json");
             EXPECT_EQ(o.body, "{\"ok\":true}");
             EXPECT_EQ(o.framing, BodyFraming::length);
             EXPECT_TRUE(o.reusable);
             EXPECT_EQ(o.error, "");
           });
}

TEST(ResponseParser, HeadIsReadyBeforeTheBody) {
  ResponseParser p;
  std::string body;
  EXPECT_EQ(p.feed("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n", body), Result::need_more);
  EXPECT_FALSE(p.head_ready());
  EXPECT_EQ(p.feed("\r\nab", body), Result::head_ready);
  EXPECT_TRUE(p.head_ready());
  EXPECT_EQ(p.head().status, 503);
  EXPECT_EQ(p.head().reason, "Service Unavailable");
  ASSERT_TRUE(p.content_length().has_value());
  EXPECT_EQ(*p.content_length(), 5U);
  EXPECT_EQ(p.body_remaining(), 3U);
  EXPECT_EQ(body, "ab");
  EXPECT_FALSE(p.reusable());  // not complete yet
  EXPECT_EQ(p.feed("cde", body), Result::done);
  EXPECT_EQ(body, "abcde");
  EXPECT_EQ(p.body_bytes(), 5U);
  EXPECT_TRUE(p.reusable());
}

TEST(ResponseParser, EmptyReasonPhrase) {
  for (std::string_view wire :
       {"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"}) {
    SCOPED_TRACE(std::string(wire));
    each_way(wire, [](const Outcome& o) {
      EXPECT_EQ(o.result, Result::done);
      EXPECT_EQ(o.head.status, 200);
      EXPECT_EQ(o.head.reason, "");
      EXPECT_TRUE(o.reusable);
    });
  }
}

TEST(ResponseParser, ReasonPhraseMayHoldSpaces) {
  each_way("HTTP/1.1 404 Not  Found here\r\nContent-Length: 0\r\n\r\n", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::done);
    EXPECT_EQ(o.head.status, 404);
    EXPECT_EQ(o.head.reason, "Not  Found here");
  });
}

TEST(ResponseParser, MalformedStatusLinesFailWithAMessage) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"HTTP/2 200 OK", "malformed status line 'HTTP/2 200 OK'"},
      {"HTTPS/1.1 200 OK", "malformed status line"},
      {"http/1.1 200 OK", "malformed status line"},
      {"HTTP/1.1  200 OK", "3 digits"},
      {"HTTP/1.1 20 OK", "3 digits"},
      {"HTTP/1.1 2000 OK", "3 digits"},
      {"HTTP/1.1 2x0 OK", "3 digits"},
      {"HTTP/1.1 099 Low", "outside 100-599"},
      {"HTTP/1.1 600 High", "outside 100-599"},
      {"HTTP/1.1 200 O\x01K", "control character in the reason phrase"},
      {"HTTP/1.1 200 O\rK", "control character in the reason phrase"},
      {"", "malformed status line ''"},
      {"garbage", "malformed status line 'garbage'"},
  };
  for (const auto& test_case : cases) {
    const std::string& line = test_case.first;
    const std::string& message = test_case.second;
    SCOPED_TRACE(line);
    each_way(line + "\r\nContent-Length: 0\r\n\r\n", [&message](const Outcome& o) {
      EXPECT_EQ(o.result, Result::failed);
      EXPECT_FALSE(o.head_ready);
      EXPECT_FALSE(o.reusable);
      EXPECT_THAT(o.error, HasSubstr(message));
    });
  }
}

TEST(ResponseParser, Http10NeedsKeepAliveToBeReusable) {
  each_way("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::done);
    EXPECT_TRUE(o.head.http10);
    EXPECT_EQ(o.body, "hi");
    EXPECT_FALSE(o.reusable);
  });
  each_way("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::done);
    EXPECT_TRUE(o.reusable);
  });
}

TEST(ResponseParser, HigherMinorVersionReadsAsHttp11) {
  each_way("HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::done);
    EXPECT_FALSE(o.head.http10);
    EXPECT_TRUE(o.reusable);
  });
}

TEST(ResponseParser, ConnectionCloseIsNotReusable) {
  each_way("HTTP/1.1 200 OK\r\nConnection: Upgrade, close\r\nContent-Length: 2\r\n\r\nhi",
           [](const Outcome& o) {
             EXPECT_EQ(o.result, Result::done);
             EXPECT_EQ(o.body, "hi");
             EXPECT_FALSE(o.reusable);
           });
}

// --- interim responses and bodiless ones -----------------------------------------------------

TEST(ResponseParser, InterimResponsesAreSkipped) {
  each_way(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
      "HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-Real: yes\r\n\r\nnew",
      [](const Outcome& o) {
        EXPECT_EQ(o.result, Result::done);
        EXPECT_EQ(o.head.status, 201);
        EXPECT_EQ(o.head.reason, "Created");
        EXPECT_FALSE(o.head.headers.has("Link"));  // the interim response's fields are dropped
        EXPECT_EQ(o.head.headers.get("X-Real"), "yes");
        EXPECT_EQ(o.head.headers.size(), 2U);
        EXPECT_EQ(o.body, "new");
        EXPECT_TRUE(o.reusable);
      });
}

TEST(ResponseParser, InterimResponseAloneIsNotTheHead) {
  ResponseParser p;
  std::string body;
  EXPECT_EQ(p.feed("HTTP/1.1 100 Continue\r\n\r\n", body), Result::need_more);
  EXPECT_FALSE(p.head_ready());
  EXPECT_EQ(p.feed_eof(), Result::failed);
  EXPECT_THAT(p.error(), HasSubstr("before the response head was complete"));
}

TEST(ResponseParser, SwitchingProtocolsEndsTheResponseAndTheConnection) {
  each_way("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
           [](const Outcome& o) {
             EXPECT_EQ(o.result, Result::done);
             EXPECT_EQ(o.head.status, 101);
             EXPECT_EQ(o.body, "");
             EXPECT_FALSE(o.reusable);
           });
}

TEST(ResponseParser, NoContentAndNotModifiedHaveNoBody) {
  for (std::string_view wire : {"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
                                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                                "HTTP/1.1 304 Not Modified\r\n\r\n"}) {
    SCOPED_TRACE(std::string(wire));
    each_way(wire, [](const Outcome& o) {
      EXPECT_EQ(o.result, Result::done);
      EXPECT_EQ(o.body, "");
      EXPECT_EQ(o.framing, BodyFraming::none);
      EXPECT_TRUE(o.reusable);
    });
  }
}

TEST(ResponseParser, ResponseToHeadHasNoBody) {
  const Options head{.eof = false, .head_request = true};
  each_way(
      "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
      [](const Outcome& o) {
        EXPECT_EQ(o.result, Result::done);
        EXPECT_EQ(o.head.headers.get("Content-Length"), "1234");
        EXPECT_EQ(o.body, "");
        EXPECT_TRUE(o.reusable);
      },
      head);
  each_way(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
      [](const Outcome& o) {
        EXPECT_EQ(o.result, Result::done);
        EXPECT_TRUE(o.reusable);
      },
      head);
  // The same bytes answer a GET with a body that runs until close.
  each_way("HTTP/1.1 200 OK\r\n\r\n", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::head_ready);
    EXPECT_EQ(o.framing, BodyFraming::until_close);
  });
}

// --- chunked ---------------------------------------------------------------------------------

TEST(ResponseParser, ChunkedBodyIsDechunked) {
  each_way(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n"
      "1A;name=value;other=\"q\"\r\nabcdefghijklmnopqrstuvwxyz\r\n"
      "1 \r\n!\r\n"
      "0\r\nX-Checksum: 42\r\nX-More: 1\r\n\r\n",
      [](const Outcome& o) {
        EXPECT_EQ(o.result, Result::done);
        EXPECT_EQ(o.framing, BodyFraming::chunked);
        EXPECT_EQ(o.body, "helloabcdefghijklmnopqrstuvwxyz!");
        EXPECT_FALSE(o.head.headers.has("X-Checksum"));  // trailers are dropped
        EXPECT_TRUE(o.reusable);
      });
}

TEST(ResponseParser, ChunkedWithBareLineFeeds) {
  each_way("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::done);
    EXPECT_EQ(o.body, "abc");
    EXPECT_TRUE(o.reusable);
  });
}

TEST(ResponseParser, ChunkedWinsOverContentLengthButIsNotReused) {
  each_way(
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: "
      "chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
      [](const Outcome& o) {
        EXPECT_EQ(o.result, Result::done);
        EXPECT_EQ(o.framing, BodyFraming::chunked);
        EXPECT_EQ(o.body, "0123456789");
        EXPECT_FALSE(o.reusable);
      });
}

TEST(ResponseParser, InvalidChunkSizeFails) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"zz\r\n", "invalid chunk size line 'zz'"},
      {"\r\n", "invalid chunk size line ''"},
      {";ext\r\n", "invalid chunk size line ';ext'"},
      {"-5\r\nhello\r\n", "invalid chunk size line '-5'"},
      {"0x5\r\nhello\r\n", "invalid chunk size line '0x5'"},
      {"1000000000000000\r\n", "invalid chunk size line"},  // 16 hex digits
      {std::string(5000, '1') + "\r\n", "chunk size line longer than 4096 bytes"},
  };
  for (const auto& test_case : cases) {
    const std::string& chunks = test_case.first;
    const std::string& message = test_case.second;
    SCOPED_TRACE(chunks.substr(0, 40));
    each_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks, [&message](const Outcome& o) {
      EXPECT_EQ(o.result, Result::failed);
      EXPECT_TRUE(o.head_ready);
      EXPECT_THAT(o.error, HasSubstr(message));
    });
  }
}

TEST(ResponseParser, ChunkDataWithoutCrlfFails) {
  for (std::string_view chunks : {"3\r\nabcX\r\n0\r\n\r\n", "3\r\nabc\rX0\r\n\r\n", "3\r\nabc\r\r\n"}) {
    SCOPED_TRACE(std::string(chunks));
    each_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(chunks),
             [](const Outcome& o) {
               EXPECT_EQ(o.result, Result::failed);
               EXPECT_EQ(o.body, "abc");
               EXPECT_THAT(o.error, HasSubstr("chunk data not followed by CRLF"));
             });
  }
}

TEST(ResponseParser, OversizedTrailerFails) {
  std::string trailers;
  for (int i = 0; i < 101; ++i) trailers += "T" + std::to_string(i) + ": x\r\n";
  each_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + trailers + "\r\n",
           [](const Outcome& o) {
             EXPECT_EQ(o.result, Result::failed);
             EXPECT_THAT(o.error, HasSubstr("more than 100 trailer fields"));
           });
}

TEST(ResponseParser, UnsupportedTransferCodingFails) {
  each_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::failed);
    EXPECT_THAT(o.error, HasSubstr("unsupported Transfer-Encoding 'gzip'"));
  });
  each_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           [](const Outcome& o) {
             EXPECT_EQ(o.result, Result::failed);
             EXPECT_THAT(o.error, HasSubstr("malformed Transfer-Encoding"));
           });
}

TEST(ResponseParser, ServerSentEventsStreamGrowsChunkByChunk) {
  // What a model server's streaming completion looks like on the wire, arriving as the tokens
  // are produced; the caller moves the body out after each recv.
  const std::vector<std::string> events = {
      "data: {\"choices\":[{\"text\":\"Hel\"}]}\n\n",
      "data: {\"choices\":[{\"text\":\"lo\"}]}\n\n",
      "data: [DONE]\n\n",
  };
  auto chunk = [](const std::string& data) {
    std::string s;
    static const char* const kHex = "0123456789abcdef";
    for (std::size_t n = data.size(); n > 0; n /= 16) s.insert(s.begin(), kHex[n % 16]);
    return s + "\r\n" + data + "\r\n";
  };
  ResponseParser p;
  std::string body;
  ASSERT_EQ(p.feed("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                   body),
            Result::head_ready);
  EXPECT_EQ(body, "");
  EXPECT_EQ(p.head().headers.get("Content-Type"), "text/event-stream");
  std::string streamed;
  for (const auto& event : events) {
    SCOPED_TRACE(event);
    const std::string wire = chunk(event);
    // The chunk arrives in three recvs: its size line split, then the rest.
    EXPECT_EQ(p.feed(wire.substr(0, 1), body), Result::head_ready);
    EXPECT_EQ(body, "");
    EXPECT_EQ(p.feed(wire.substr(1, 10), body), Result::head_ready);
    EXPECT_EQ(p.feed(wire.substr(11), body), Result::head_ready);
    EXPECT_EQ(body, event);  // exactly this event, nothing held back
    EXPECT_EQ(p.body_bytes(), streamed.size() + event.size());
    streamed += body;
    body.clear();
  }
  EXPECT_EQ(p.feed("0\r\n", body), Result::head_ready);
  EXPECT_EQ(p.feed("\r\n", body), Result::done);
  EXPECT_EQ(body, "");
  EXPECT_EQ(streamed, events[0] + events[1] + events[2]);
  EXPECT_TRUE(p.reusable());
}

// --- Content-Length --------------------------------------------------------------------------

TEST(ResponseParser, InvalidContentLengthFails) {
  for (std::string_view value : {"+5", "-1", "5a", "0x5", "5 5", "", ",", "99999999999999999999999"}) {
    SCOPED_TRACE(std::string(value));
    each_way("HTTP/1.1 200 OK\r\nContent-Length: " + std::string(value) + "\r\n\r\nhello",
             [](const Outcome& o) {
               EXPECT_EQ(o.result, Result::failed);
               EXPECT_THAT(o.error, HasSubstr("invalid Content-Length"));
             });
  }
}

TEST(ResponseParser, ConflictingContentLengthsFail) {
  each_way("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::failed);
    EXPECT_THAT(o.error, HasSubstr("conflicting Content-Length values '5' and '6'"));
  });
  each_way("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::failed);
    EXPECT_THAT(o.error, HasSubstr("conflicting Content-Length"));
  });
}

TEST(ResponseParser, RepeatedEqualContentLengthsAreAccepted) {
  each_way("HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length:  5 \r\nContent-Length: 5,5\r\n\r\nhello",
           [](const Outcome& o) {
             EXPECT_EQ(o.result, Result::done);
             EXPECT_EQ(o.body, "hello");
             EXPECT_TRUE(o.reusable);
           });
}

TEST(ResponseParser, ZeroContentLengthIsDoneAtTheHead) {
  each_way("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::done);
    EXPECT_TRUE(o.reusable);
  });
}

TEST(ResponseParser, LargeBodyInPieces) {
  const std::string payload(1 << 20, 'x');
  ResponseParser p;
  std::string body;
  p.feed("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(payload.size()) + "\r\n\r\n", body);
  std::size_t received = 0;
  for (std::size_t at = 0; at < payload.size(); at += 16384) {
    const Result r = p.feed(std::string_view(payload).substr(at, 16384), body);
    received += body.size();
    body.clear();
    EXPECT_EQ(r, at + 16384 >= payload.size() ? Result::done : Result::head_ready);
  }
  EXPECT_EQ(received, payload.size());
  EXPECT_TRUE(p.reusable());
}

// --- no framing: until close -----------------------------------------------------------------

TEST(ResponseParser, BodyWithoutFramingRunsUntilClose) {
  for (std::string_view version : {"HTTP/1.1", "HTTP/1.0"}) {
    SCOPED_TRACE(std::string(version));
    const std::string wire = std::string(version) + " 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this";
    each_way(wire, [](const Outcome& o) {
      EXPECT_EQ(o.result, Result::head_ready);
      EXPECT_EQ(o.body, "all of this");
      EXPECT_EQ(o.framing, BodyFraming::until_close);
    });
    each_way(
        wire,
        [](const Outcome& o) {
          EXPECT_EQ(o.result, Result::done);
          EXPECT_EQ(o.body, "all of this");
          EXPECT_FALSE(o.reusable);
        },
        Options{.eof = true});
  }
}

// --- EOF -------------------------------------------------------------------------------------

TEST(ResponseParser, EofBeforeAnyByteSaysSo) {
  ResponseParser p;
  EXPECT_TRUE(p.nothing_received());
  EXPECT_EQ(p.feed_eof(), Result::failed);
  EXPECT_TRUE(p.nothing_received());  // an idle keep-alive connection closed: safe to retry
  EXPECT_EQ(p.error(), "connection closed before any byte of the response");
}

TEST(ResponseParser, EofInsideTheMessageFails) {
  const Options eof{.eof = true};
  each_way(
      "HTTP/1.1 200 OK\r\nContent-Le",
      [](const Outcome& o) {
        EXPECT_EQ(o.result, Result::failed);
        EXPECT_FALSE(o.nothing_received);
        EXPECT_THAT(o.error, HasSubstr("connection closed before the response head was complete"));
      },
      eof);
  each_way(
      "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
      [](const Outcome& o) {
        EXPECT_EQ(o.result, Result::failed);
        EXPECT_EQ(o.body, "abc");
        EXPECT_THAT(o.error, HasSubstr("connection closed after 3 of 10 body bytes"));
      },
      eof);
  each_way(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
      [](const Outcome& o) {
        EXPECT_EQ(o.result, Result::failed);
        EXPECT_EQ(o.body, "abcd");
        EXPECT_THAT(o.error, HasSubstr("connection closed inside the chunked body, after 4 body bytes"));
      },
      eof);
}

TEST(ResponseParser, EofAfterACompleteResponseChangesNothing) {
  each_way(
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
      [](const Outcome& o) {
        EXPECT_EQ(o.result, Result::done);
        EXPECT_EQ(o.body, "hi");
        EXPECT_EQ(o.error, "");
      },
      Options{.eof = true});
}

// --- header fields ---------------------------------------------------------------------------

TEST(ResponseParser, HeaderFieldsAreKeptInOrderAndTrimmed) {
  each_way(
      "HTTP/1.1 200 OK\r\nX-A:\t one two \t\r\nSet-Cookie: a=1\r\nSet-Cookie: "
      "b=2\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n",
      [](const Outcome& o) {
        ASSERT_EQ(o.result, Result::done);
        EXPECT_EQ(o.head.headers.get("x-a"), "one two");
        EXPECT_TRUE(o.head.headers.has("X-Empty"));
        EXPECT_EQ(o.head.headers.get("X-Empty"), "");
        std::vector<std::string> cookies;
        for (const auto& [k, v] : o.head.headers) {
          if (k == "Set-Cookie") cookies.push_back(v);
        }
        EXPECT_EQ(cookies, (std::vector<std::string>{"a=1", "b=2"}));
      });
}

TEST(ResponseParser, MalformedHeaderFieldsFail) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"Content-Length : 5", "malformed header field line 'Content-Length : 5'"},
      {"No colon here", "malformed header field line 'No colon here'"},
      {": empty name", "malformed header field line"},
      {"X-Folded: a\r\n  b", "obsolete line folding"},
      {"X-Ctl: a\x01"
       "b",
       "control character in the value of header field 'X-Ctl'"},
      {"X-Cr: a\rb", "control character in the value of header field 'X-Cr'"},
      {std::string("X-Nul: a\0b", 10), "control character in the value of header field 'X-Nul'"},
  };
  for (const auto& test_case : cases) {
    const std::string& field = test_case.first;
    const std::string& message = test_case.second;
    SCOPED_TRACE(field);
    each_way("HTTP/1.1 200 OK\r\n" + field + "\r\nContent-Length: 0\r\n\r\n", [&message](const Outcome& o) {
      EXPECT_EQ(o.result, Result::failed);
      EXPECT_FALSE(o.head_ready);
      EXPECT_THAT(o.error, HasSubstr(message));
    });
  }
}

// --- limits ----------------------------------------------------------------------------------

TEST(ResponseParser, StatusLineLimit) {
  const std::string at_limit = "HTTP/1.1 200 " + std::string(ResponseParser::kMaxStatusLineBytes - 13, 'r');
  ASSERT_EQ(at_limit.size(), ResponseParser::kMaxStatusLineBytes);
  each_way(at_limit + "\r\nContent-Length: 0\r\n\r\n",
           [](const Outcome& o) { EXPECT_EQ(o.result, Result::done); });
  each_way(at_limit + "r\r\nContent-Length: 0\r\n\r\n", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::failed);
    EXPECT_EQ(o.error, "status line longer than 8192 bytes");
  });
  // Without a line end in sight, the limit applies as the bytes arrive.
  each_way(at_limit + "rr", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::failed);
    EXPECT_EQ(o.error, "status line longer than 8192 bytes");
  });
}

TEST(ResponseParser, HeaderSectionLimit) {
  // 64 KiB of field lines, CR LF included, is the most accepted.
  const std::size_t filler =
      ResponseParser::kMaxHeaderBytes - std::string_view("Content-Length: 0\r\n").size();
  const std::string big = "X-Big: " + std::string(filler - 9, 'b') + "\r\n";
  ASSERT_EQ(big.size(), filler);
  each_way("HTTP/1.1 200 OK\r\n" + big + "Content-Length: 0\r\n\r\n",
           [](const Outcome& o) { EXPECT_EQ(o.result, Result::done); });
  each_way("HTTP/1.1 200 OK\r\n" + big + "Content-Length:  0\r\n\r\n", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::failed);
    EXPECT_EQ(o.error, "header section larger than 65536 bytes");
  });
}

TEST(ResponseParser, HeaderFieldCountLimit) {
  std::string fields;
  for (int i = 0; i < 99; ++i) fields += "X-" + std::to_string(i) + ": v\r\n";
  each_way("HTTP/1.1 200 OK\r\n" + fields + "Content-Length: 0\r\n\r\n", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::done);
    EXPECT_EQ(o.head.headers.size(), 100U);
  });
  each_way("HTTP/1.1 200 OK\r\n" + fields + "X-One-More: v\r\nContent-Length: 0\r\n\r\n",
           [](const Outcome& o) {
             EXPECT_EQ(o.result, Result::failed);
             EXPECT_EQ(o.error, "more than 100 header fields");
           });
}

// --- after the response ----------------------------------------------------------------------

TEST(ResponseParser, BytesAfterTheResponseAreNotBodyAndSpoilReuse) {
  each_way("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA", [](const Outcome& o) {
    EXPECT_EQ(o.result, Result::done);
    EXPECT_EQ(o.body, "hi");
    EXPECT_EQ(o.unsolicited, 5U);
    EXPECT_FALSE(o.reusable);
  });
  each_way("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n",
           [](const Outcome& o) {
             EXPECT_EQ(o.result, Result::done);
             EXPECT_EQ(o.body, "hi");
             EXPECT_EQ(o.unsolicited, 17U);
             EXPECT_FALSE(o.reusable);
           });
  ResponseParser p;
  std::string body;
  ASSERT_EQ(p.feed("HTTP/1.1 204 No Content\r\n\r\n", body), Result::done);
  EXPECT_TRUE(p.reusable());
  EXPECT_EQ(p.feed("\r\n", body), Result::done);  // a later recv: still unsolicited
  EXPECT_EQ(body, "");
  EXPECT_FALSE(p.reusable());
}

TEST(ResponseParser, ResetReadiesTheNextResponseOnTheConnection) {
  ResponseParser p;
  std::string body;
  ASSERT_EQ(p.feed("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-First: 1\r\n\r\none", body), Result::done);
  ASSERT_TRUE(p.reusable());
  p.reset(/*response_to_head=*/true);
  EXPECT_FALSE(p.head_ready());
  EXPECT_TRUE(p.nothing_received());
  body.clear();
  ASSERT_EQ(p.feed("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", body), Result::done);
  EXPECT_FALSE(p.head().headers.has("X-First"));
  EXPECT_EQ(body, "");
  EXPECT_TRUE(p.reusable());
  p.reset();  // keeps the HEAD flag (a retry of the same request)
  ASSERT_EQ(p.feed("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", body), Result::done);
  EXPECT_EQ(body, "");
  p.reset(/*response_to_head=*/false);
  ASSERT_EQ(p.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n", body),
            Result::done);
  EXPECT_EQ(body, "two");
  EXPECT_TRUE(p.reusable());
}

TEST(ResponseParser, FailedStaysFailed) {
  ResponseParser p;
  std::string body;
  ASSERT_EQ(p.feed("XTTP/1.1 200 OK\r\n", body), Result::failed);
  const std::string first = p.error();
  EXPECT_EQ(p.feed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", body), Result::failed);
  EXPECT_EQ(p.feed_eof(), Result::failed);
  EXPECT_EQ(p.error(), first);
  EXPECT_FALSE(p.reusable());
}

// --- the building blocks on their own --------------------------------------------------------

TEST(ResponseParserLineReader, JoinsALineSplitAcrossPieces) {
  LineReader r;
  std::string_view line;
  std::string_view in = "ab";
  EXPECT_EQ(r.next(in, 10, line), LineReader::Status::need_more);
  EXPECT_TRUE(in.empty());
  EXPECT_EQ(r.pending(), 2U);
  in = "c\r";
  EXPECT_EQ(r.next(in, 10, line), LineReader::Status::need_more);
  in = "\nnext\r\nrest";
  ASSERT_EQ(r.next(in, 10, line), LineReader::Status::line);
  EXPECT_EQ(line, "abc");
  ASSERT_EQ(r.next(in, 10, line), LineReader::Status::line);
  EXPECT_EQ(line, "next");
  EXPECT_EQ(in, "rest");
  EXPECT_EQ(r.next(in, 2, line), LineReader::Status::too_long);
}

TEST(ResponseParserChunkDecoder, LeavesTheBytesAfterTheBody) {
  ChunkDecoder d;
  std::string body;
  std::string_view in = "3;x=y\r\nabc\r\n0\r\nTrailer: t\r\n\r\nGET / HTTP/1.1\r\n";
  EXPECT_EQ(d.decode(in, body), ChunkDecoder::Status::done);
  EXPECT_EQ(body, "abc");
  EXPECT_EQ(d.decoded_bytes(), 3U);
  EXPECT_EQ(in, "GET / HTTP/1.1\r\n");
  d.reset();
  body.clear();
  in = "2\r\nhi\r\n0\r\n\r\n";
  EXPECT_EQ(d.decode(in, body), ChunkDecoder::Status::done);
  EXPECT_EQ(body, "hi");
}

TEST(ResponseParserChunkDecoder, BodyLimit) {
  ChunkDecoder d(5);
  std::string body;
  std::string_view in = "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
  EXPECT_EQ(d.decode(in, body), ChunkDecoder::Status::failed);
  EXPECT_TRUE(d.too_large());
  EXPECT_EQ(body, "abc");
  EXPECT_EQ(d.error(), "chunked body larger than 5 bytes");
  ChunkDecoder bad;
  in = "q\r\n";
  EXPECT_EQ(bad.decode(in, body), ChunkDecoder::Status::failed);
  EXPECT_FALSE(bad.too_large());
}

}  // namespace
}  // namespace gpumod::http
