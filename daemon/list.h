/*
 * daemon/list.h — intrusive doubly-linked lists with a count.
 *
 * A connection's state *is* the list it sits on (PgBouncer's model), so the
 * count of each list is the number of objects in that state.
 */
#ifndef WARMPOOL_LIST_H
#define WARMPOOL_LIST_H

#include <stddef.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct list_node {
	struct list_node *prev, *next;
};

struct list {
	struct list_node head; /* sentinel */
	size_t n;
};

static inline void list_init(struct list *l)
{
	l->head.prev = l->head.next = &l->head;
	l->n = 0;
}

static inline int list_empty(const struct list *l)
{
	return l->n == 0;
}

static inline void list_insert_after_(struct list_node *pos, struct list_node *node)
{
	node->prev = pos;
	node->next = pos->next;
	pos->next->prev = node;
	pos->next = node;
}

static inline void list_push_front(struct list *l, struct list_node *node)
{
	list_insert_after_(&l->head, node);
	l->n++;
}

static inline void list_push_back(struct list *l, struct list_node *node)
{
	list_insert_after_(l->head.prev, node);
	l->n++;
}

static inline void list_remove(struct list *l, struct list_node *node)
{
	node->prev->next = node->next;
	node->next->prev = node->prev;
	node->prev = node->next = node;
	l->n--;
}

static inline struct list_node *list_first(const struct list *l)
{
	return l->n ? l->head.next : NULL;
}

/* Iterate allowing removal of the current node. */
#define list_for_each_safe(pos, tmp, l)                                                                      \
	for ((pos) = (l)->head.next, (tmp) = (pos)->next; (pos) != &(l)->head;                               \
	     (pos) = (tmp), (tmp) = (pos)->next)

#endif
