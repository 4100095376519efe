-- Who wrote each post, from posts.events, so that a comment notifies its
-- post's author.
CREATE TABLE post_authors (
    post_id BIGINT PRIMARY KEY,
    author_id BIGINT NOT NULL,
    title TEXT NOT NULL
);

-- Comments on posts not heard of yet: a post's PostCreated and its
-- comments' CommentAdded have different keys, so they may arrive in
-- either order. Notified when the post arrives.
CREATE TABLE pending_comments (
    event_id TEXT PRIMARY KEY,
    post_id BIGINT NOT NULL,
    commenter_id BIGINT NOT NULL,
    excerpt TEXT NOT NULL
);

CREATE INDEX pending_comments_by_post ON pending_comments (post_id);
